"""Packaging Python code (and PyTorch models that were never converted to
TorchScript): the code and data travel in the package, and an entrypoint
builds the model when it is loaded."""

import os
import shutil
from typing import Any, Mapping, Optional, Sequence

import neuropods_native

from neuropods._compat import Unpack
from ._common import CommonOptions, PackagerOptions, SpecEntry, new_package, write_backend_config


def _requirements_text(requirements: "Optional[str | Sequence[str]]") -> Optional[str]:
    """The text of 0/requirements.lock, checked as the loader will read it
    (PEP 508 lines; comments and blank lines allowed)."""
    if requirements is None:
        return None
    if not isinstance(requirements, str):
        requirements = "\n".join(requirements)
    neuropods_native.check_requirements(requirements)
    return requirements if requirements.endswith("\n") else requirements + "\n"


def _ignore_compiled(_dir: str, names: Sequence[str]) -> Sequence[str]:
    return [n for n in names if n == "__pycache__" or n.endswith(".pyc")]


def _copy_code(code_path_spec: Sequence[Mapping[str, Any]], code_dir: str) -> None:
    """Copies each ``{"python_root", "dirs_to_package"}`` into ``code_dir``,
    keeping paths relative to the root ("" packages the whole root)."""
    for index, spec in enumerate(code_path_spec):
        root = spec.get("python_root")
        if not root or not os.path.isdir(root):
            raise ValueError(f"code_path_spec[{index}]: python_root {root!r} is not a directory")
        for sub in spec.get("dirs_to_package", [""]):
            source = os.path.normpath(os.path.join(root, sub))
            if os.path.relpath(source, root).startswith(os.pardir):
                raise ValueError(f"code_path_spec[{index}]: {sub!r} is outside python_root")
            if not os.path.isdir(source):
                raise ValueError(f"code_path_spec[{index}]: {source!r} is not a directory")
            target = os.path.join(code_dir, os.path.relpath(source, root))
            shutil.copytree(source, target, ignore=_ignore_compiled, dirs_exist_ok=True)


def _copy_data(data_paths: Sequence[Mapping[str, str]], data_dir: str) -> None:
    """Copies each ``{"path", "packaged_name"}`` (a file or folder) into
    ``data_dir``."""
    for index, item in enumerate(data_paths):
        path, name = item.get("path"), item.get("packaged_name")
        if not name or os.path.isabs(name) or os.pardir in name.replace("\\", "/").split("/"):
            raise ValueError(f"data_paths[{index}]: packaged_name {name!r} must be a relative name")
        target = os.path.join(data_dir, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if path and os.path.isdir(path):
            shutil.copytree(path, target, ignore=_ignore_compiled)
        elif path and os.path.isfile(path):
            shutil.copy(path, target)
        else:
            raise ValueError(f"data_paths[{index}]: {path!r} does not exist")


def create_python_neuropod(
    neuropod_path: "os.PathLike[str] | str",
    model_name: str,
    data_paths: Sequence[Mapping[str, str]],
    code_path_spec: Sequence[Mapping[str, Any]],
    entrypoint_package: str,
    entrypoint: str,
    input_spec: Sequence[SpecEntry],
    output_spec: Sequence[SpecEntry],
    requirements: "Optional[str | Sequence[str]]" = None,
    platform: str = "python",
    **options: Unpack[PackagerOptions],
) -> None:
    """Packages Python code as a neuropod.

    ``data_paths``: ``[{"path": ..., "packaged_name": ...}]`` copied into
    ``0/data/``. ``code_path_spec``: ``[{"python_root": ...,
    "dirs_to_package": [...]}]`` copied into ``0/code/`` (``""`` is the whole
    root; ``__pycache__`` and ``.pyc`` files are skipped). At load,
    ``entrypoint_package.entrypoint(data_root)`` must return a callable; it
    is called with the inputs as keyword arguments and returns a dict of
    numpy arrays (torch tensors are converted). The code is imported under a
    private top-level name, so packages of the same code can be loaded side
    by side; inside the package, import its own modules relatively.

    ``requirements``: PEP 508 lines such as ``torch==2.13.0``,
    ``numpy>=1.24,<3`` or ``scipy~=1.11; python_version >= "3.10"`` (a str or
    a list of lines), stored in ``0/requirements.lock`` and checked, not
    installed, at load with PEP 440 version matching.

    ``options``: see `CommonOptions` (test data, zip, devices, custom ops).
    """
    if platform not in ("python", "pytorch"):
        raise ValueError(f"platform must be 'python' or 'pytorch', got {platform!r}")
    common = CommonOptions.of("create_python_neuropod", options)
    requirements_text = _requirements_text(requirements)
    with new_package(
        neuropod_path,
        name=model_name,
        platform=platform,
        input_spec=input_spec,
        output_spec=output_spec,
        options=common,
    ) as folder:
        os.makedirs(os.path.join(folder, "0", "code"), exist_ok=True)
        os.makedirs(os.path.join(folder, "0", "data"), exist_ok=True)
        _copy_code(code_path_spec, os.path.join(folder, "0", "code"))
        _copy_data(data_paths, os.path.join(folder, "0", "data"))
        write_backend_config(folder, {"entrypoint_package": entrypoint_package, "entrypoint": entrypoint})
        if requirements_text is not None:
            with open(os.path.join(folder, "0", "requirements.lock"), "w") as f:
                f.write(requirements_text)


def create_pytorch_neuropod(
    neuropod_path: "os.PathLike[str] | str",
    model_name: str,
    data_paths: Sequence[Mapping[str, str]],
    code_path_spec: Sequence[Mapping[str, Any]],
    entrypoint_package: str,
    entrypoint: str,
    input_spec: Sequence[SpecEntry],
    output_spec: Sequence[SpecEntry],
    requirements: "Optional[str | Sequence[str]]" = None,
    **options: Unpack[PackagerOptions],
) -> None:
    """Packages a PyTorch model as Python code (platform ``pytorch``); the
    same arguments as `create_python_neuropod`. The entrypoint typically
    builds the ``nn.Module`` and loads its weights from ``data_root``."""
    create_python_neuropod(
        neuropod_path,
        model_name,
        data_paths,
        code_path_spec,
        entrypoint_package,
        entrypoint,
        input_spec,
        output_spec,
        requirements,
        platform="pytorch",
        **options,
    )
