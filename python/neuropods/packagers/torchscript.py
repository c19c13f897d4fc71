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
