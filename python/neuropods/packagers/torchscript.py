"""Packaging TorchScript models."""

import os
import shutil
import warnings
from typing import Any, Mapping, Optional, Sequence

from ._common import SpecEntry, new_package, self_test


def create_torchscript_neuropod(
    neuropod_path: "os.PathLike[str] | str",
    model_name: str,
    module: Any = None,
    module_path: Optional[str] = None,
    input_spec: Sequence[SpecEntry] = (),
    output_spec: Sequence[SpecEntry] = (),
    test_input_data: Optional[Mapping[str, Any]] = None,
    test_expected_out: Optional[Mapping[str, Any]] = None,
    package_as_zip: bool = False,
    input_tensor_device: Optional[Mapping[str, str]] = None,
    default_input_tensor_device: str = "GPU",
    custom_ops: Sequence[str] = (),
    platform_version_semver: str = "*",
) -> None:
    """Packages a TorchScript module (``torch.jit.script``/``trace`` result,
    or a file saved by ``torch.jit.save``) as a neuropod at ``neuropod_path``.

    With ``test_input_data``, the package is loaded and run once; a result
    that differs from ``test_expected_out`` raises ValueError (and the
    package is removed).
    """
    if (module is None) == (module_path is None):
        raise ValueError("give exactly one of module and module_path")
    with new_package(
        neuropod_path,
        name=model_name,
        platform="torchscript",
        input_spec=input_spec,
        output_spec=output_spec,
        package_as_zip=package_as_zip,
        input_tensor_device=input_tensor_device,
        default_input_tensor_device=default_input_tensor_device,
        custom_ops=custom_ops,
        platform_version_semver=platform_version_semver,
    ) as folder:
        model_file = os.path.join(folder, "0", "data", "model.pt")
        if module is not None:
            import torch

            with warnings.catch_warnings():
                # torch 2.13 deprecates torch.jit.save; TorchScript files are
                # still what this platform loads, so the warning is ours.
                warnings.filterwarnings("ignore", r".*torch\.jit", DeprecationWarning)
                torch.jit.save(module, model_file)
        else:
            shutil.copy(os.fspath(module_path), model_file)
    self_test(neuropod_path, test_input_data, test_expected_out)
