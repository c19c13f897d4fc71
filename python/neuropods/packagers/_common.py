"""What every packager does: lay out the package, write config.json and the
manifest, zip it if asked, and run the self-test."""

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np

import neuropods_native

SpecEntry = Mapping[str, Any]


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, str) and dtype == "string":
        return dtype
    if dtype is str or dtype is bytes:
        return "string"
    kind = np.dtype(dtype)
    if kind.kind in "USO":
        return "string"
    return kind.name


def normalize_spec(spec: Sequence[SpecEntry], what: str) -> List[Dict[str, Any]]:
    """Spec entries as config.json wants them (shape as a list; dtype as a name)."""
    out = []
    for i, entry in enumerate(spec):
        try:
            name, dtype, shape = entry["name"], entry["dtype"], entry["shape"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"{what}[{i}] needs name, dtype and shape: got {entry!r}") from e
        try:
            dtype_name = _dtype_name(dtype)
        except TypeError as e:
            raise ValueError(f"{what}[{i}] ('{name}'): unknown dtype {dtype!r}") from e
        out.append({"name": name, "dtype": dtype_name, "shape": list(shape)})
    return out


@contextlib.contextmanager
def package_folder(neuropod_path: "os.PathLike[str] | str", package_as_zip: bool) -> Iterator[str]:
    """Yields the folder to fill; on success it becomes the package (moved
    into place, or zipped). Refuses to overwrite an existing path.

    Atomic: everything is written in a temporary folder beside the target
    (same file system) and renamed onto the target at the end, so an
    interrupted run (Ctrl-C, an exception, a kill) never leaves a partial
    package at the target; the temporary folder is removed unless the
    process is killed."""
    target = os.fspath(neuropod_path)
    if os.path.exists(target):
        raise FileExistsError(f"{target} already exists; refusing to overwrite it")
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".neuropod-", dir=parent) as work:
        folder = os.path.join(work, "package")
        os.makedirs(os.path.join(folder, "0", "data"))
        yield folder
        neuropods_native.write_manifest(folder)
        if package_as_zip:
            archive_path = os.path.join(work, "package.zip")
            with zipfile.ZipFile(archive_path, "w", zipfile.ZIP_DEFLATED) as archive:
                for root, _dirs, files in os.walk(folder):
                    for name in sorted(files):
                        path = os.path.join(root, name)
                        archive.write(path, os.path.relpath(path, folder))
            os.replace(archive_path, target)
        else:
            os.replace(folder, target)


def write_config(
    folder: str,
    *,
    name: str,
    platform: str,
    input_spec: Sequence[SpecEntry],
    output_spec: Sequence[SpecEntry],
    input_tensor_device: Optional[Mapping[str, str]] = None,
    default_input_tensor_device: str = "GPU",
    custom_ops: Sequence[str] = (),
    platform_version_semver: str = "*",
) -> None:
    """Writes config.json after checking it as the loader will."""
    inputs = normalize_spec(input_spec, "input_spec")
    devices = dict(input_tensor_device or {})
    config = {
        "name": name,
        "platform": platform,
        "platform_version_semver": platform_version_semver,
        "input_spec": inputs,
        "output_spec": normalize_spec(output_spec, "output_spec"),
        "input_tensor_device": {
            spec["name"]: devices.get(spec["name"], default_input_tensor_device) for spec in inputs
        },
        "custom_ops": list(custom_ops),
    }
    unknown = set(devices) - {spec["name"] for spec in inputs}
    if unknown:
        raise ValueError(f"input_tensor_device names unknown inputs: {sorted(unknown)}")
    text = json.dumps(config, indent=2)
    neuropods_native.check_config(text)
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write(text)


@contextlib.contextmanager
def new_package(
    neuropod_path: "os.PathLike[str] | str",
    *,
    name: str,
    platform: str,
    input_spec: Sequence[SpecEntry],
    output_spec: Sequence[SpecEntry],
    package_as_zip: bool = False,
    input_tensor_device: Optional[Mapping[str, str]] = None,
    default_input_tensor_device: str = "GPU",
    custom_ops: Sequence[str] = (),
    platform_version_semver: str = "*",
) -> Iterator[str]:
    """What every packager starts with: a package folder with config.json
    (specs checked before the model is written) and the custom ops in
    place. Yields the folder for the model's files; see `package_folder`."""
    with package_folder(neuropod_path, package_as_zip) as folder:
        write_config(
            folder,
            name=name,
            platform=platform,
            input_spec=input_spec,
            output_spec=output_spec,
            input_tensor_device=input_tensor_device,
            default_input_tensor_device=default_input_tensor_device,
            custom_ops=copy_custom_ops(folder, custom_ops),
            platform_version_semver=platform_version_semver,
        )
        yield folder


def write_backend_config(folder: str, config: Mapping[str, Any]) -> None:
    """Writes the backend's own settings, 0/config.json."""
    os.makedirs(os.path.join(folder, "0"), exist_ok=True)
    with open(os.path.join(folder, "0", "config.json"), "w") as f:
        json.dump(dict(config), f, indent=2)


def copy_custom_ops(folder: str, custom_ops: Sequence[str]) -> List[str]:
    """Copies custom op libraries into 0/ops/; returns their file names."""
    names = []
    if custom_ops:
        ops = os.path.join(folder, "0", "ops")
        os.makedirs(ops, exist_ok=True)
        for op in custom_ops:
            shutil.copy(op, ops)
            names.append(os.path.basename(op))
    return names


def _matches(expected: Any, actual: np.ndarray) -> bool:
    expected = np.asarray(expected)
    if expected.dtype.kind in "USOT" or actual.dtype.kind in "USOT":
        # Element by element as Python str: numpy cannot cast its
        # variable-width strings (kind T) to fixed-width ones in bulk.
        def as_str(a: np.ndarray) -> list:
            return [x.decode() if isinstance(x, bytes) else str(x) for x in a.ravel().tolist()]

        return expected.shape == actual.shape and as_str(expected) == as_str(actual)
    return expected.shape == actual.shape and bool(np.allclose(expected, actual))


def self_test(
    neuropod_path: "os.PathLike[str] | str",
    test_input_data: Optional[Mapping[str, Any]],
    test_expected_out: Optional[Mapping[str, Any]],
) -> None:
    """Loads the new package and checks its outputs against the expected ones;
    on a mismatch removes the package and raises ValueError."""
    if test_input_data is None:
        return
    from neuropods.loader import load_neuropod

    try:
        with load_neuropod(neuropod_path) as model:
            out = model.infer(dict(test_input_data))
        for name, expected in (test_expected_out or {}).items():
            if name not in out:
                raise ValueError(
                    f"self-test: output '{name}' is missing (model returned {sorted(out)})"
                )
            if not _matches(expected, out[name]):
                raise ValueError(
                    f"self-test: output '{name}' differs from test_expected_out:\n"
                    f"expected {np.asarray(expected)!r}\ngot      {out[name]!r}"
                )
    except BaseException:
        path = os.fspath(neuropod_path)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
        raise
