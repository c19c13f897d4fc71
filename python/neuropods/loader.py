"""Loading packaged models."""

from os import PathLike
from typing import Optional, TypedDict, Union

from neuropods_native import Neuropod

__all__ = ["load_neuropod", "LoadOptions", "Neuropod"]


class LoadOptions(TypedDict, total=False):
    """The options of ``load_neuropod`` (and of ``Neuropod(...)``), typed,
    for code that passes them on as ``**options``."""

    visible_gpu: Optional[int]
    intra_op_threads: Optional[int]
    inter_op_threads: Optional[int]
    verify_manifest: bool
    use_ope: bool
    ope_python: Union[str, "PathLike[str]", None]


def load_neuropod(
    neuropod_path: Union[str, "PathLike[str]"],
    visible_gpu: Optional[int] = None,
    *,
    intra_op_threads: Optional[int] = None,
    inter_op_threads: Optional[int] = None,
    verify_manifest: bool = False,
    use_ope: bool = False,
    ope_python: Union[str, "PathLike[str]", None] = None,
) -> Neuropod:
    """Loads a package (a folder or a zip) and returns the model.

    ``visible_gpu=None`` runs on the CPU; ``visible_gpu=i`` on GPU ``i`` when
    the framework sees it (otherwise the CPU, with a logged warning).
    Options: ``intra_op_threads`` (>= 1), ``inter_op_threads`` (0: no
    inter-op pool, ops run on the calling thread), ``verify_manifest``.
    ``use_ope=True`` runs the model in a worker process of its own: same
    results and errors, but a model that crashes, exits or hangs raises
    ``WorkerError`` instead of taking the caller down, and the next call
    starts a new worker. ``ope_python`` names the Python executable (and
    so the environment) a python-platform model's worker runs; by default
    the caller's own. An unknown option is a ``TypeError``; a bad value an
    ``InvalidOptionError`` naming the option.
    The model is a context manager; ``infer({name: array})`` returns a dict
    of numpy arrays; ``allocate(name, shape)`` gives an array to fill that
    reaches a worker without a copy.
    """
    return Neuropod(
        neuropod_path,
        visible_gpu,
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
        verify_manifest=verify_manifest,
        use_ope=use_ope,
        ope_python=ope_python,
    )
