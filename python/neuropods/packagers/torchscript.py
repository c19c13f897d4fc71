"""Packaging TorchScript models."""

import os
import shutil
import warnings
from typing import Any, Optional, Sequence

from neuropods._compat import Unpack
from ._common import CommonOptions, PackagerOptions, SpecEntry, new_package


def create_torchscript_neuropod(
    neuropod_path: "os.PathLike[str] | str",
    model_name: str,
    module: Any = None,
    module_path: Optional[str] = None,
    input_spec: Sequence[SpecEntry] = (),
    output_spec: Sequence[SpecEntry] = (),
    **options: Unpack[PackagerOptions],
) -> None:
    """Packages a TorchScript module (``torch.jit.script``/``trace`` result,
    or a file saved by ``torch.jit.save``) as a neuropod at ``neuropod_path``.
    ``options``: see `CommonOptions` (test data, zip, devices, custom ops).
    """
    common = CommonOptions.of("create_torchscript_neuropod", options)
    if (module is None) == (module_path is None):
        raise ValueError("give exactly one of module and module_path")
    with new_package(
        neuropod_path,
        name=model_name,
        platform="torchscript",
        input_spec=input_spec,
        output_spec=output_spec,
        options=common,
    ) as folder:
        model_file = os.path.join(folder, "0", "data", "model.pt")
        if module is not None:
            import torch

            with warnings.catch_warnings():
                # torch 2.13 deprecates torch.jit.save; TorchScript files are
                # still what this platform loads, so the warning is ours.
                warnings.filterwarnings("ignore", r".*torch\.jit", DeprecationWarning)
                torch.jit.save(module, model_file)
        elif module_path is not None:
            shutil.copy(os.fspath(module_path), model_file)
        _check_forward_takes(module, model_file, input_spec)


def _check_forward_takes(module: Any, model_file: str, input_spec: Sequence[SpecEntry]) -> None:
    """Refuses a spec input that ``forward`` has no argument of, and an
    argument without a default that no spec input fills: the backend calls
    ``forward`` by argument name, so either package would fail at every call.
    A ``forward`` taking one Dict gets the inputs by name and takes any."""
    import torch

    if module is None:
        try:
            with warnings.catch_warnings():
                # As for torch.jit.save above: the deprecation is not the user's.
                warnings.filterwarnings("ignore", r".*torch\.jit", DeprecationWarning)
                module = torch.jit.load(model_file, map_location="cpu")  # type: ignore[no-untyped-call]
        except RuntimeError:
            # E.g. a model needing custom ops this process has not loaded:
            # the load reports what is wrong with it.
            return
    arguments = module.forward.schema.arguments[1:]  # [0] is self
    if len(arguments) == 1 and isinstance(arguments[0].type, torch.DictType):
        return
    names = [argument.name for argument in arguments]
    inputs = [spec["name"] for spec in input_spec]
    stray = [name for name in inputs if name not in names]
    if stray:
        raise ValueError(
            f"input_spec names {stray}, which the module's forward does not take (its arguments: {names})"
        )
    unfed = [a.name for a in arguments if not a.has_default_value() and a.name not in inputs]
    if unfed:
        raise ValueError(f"the module's forward requires {unfed}, which input_spec does not name")
