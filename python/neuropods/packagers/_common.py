"""What every packager does: lay out the package, write config.json and the
manifest, zip it if asked, and run the self-test."""

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import zipfile
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, TypedDict

import numpy as np

import neuropods_native

SpecEntry = Mapping[str, Any]


class PackagerOptions(TypedDict, total=False):
    """The keyword options every packager takes, with the original
    Neuropod's names (see `CommonOptions` for what each does)."""

    test_input_data: Optional[Mapping[str, Any]]
    test_expected_out: Optional[Mapping[str, Any]]
    persist_test_data: bool
    package_as_zip: bool
    input_tensor_device: Optional[Mapping[str, str]]
    default_input_tensor_device: str
    custom_ops: Sequence[str]
    platform_version_semver: str


@dataclasses.dataclass(frozen=True)
class CommonOptions:
    """What every packager does besides writing its model.

    - ``test_input_data``/``test_expected_out``: the new package is loaded
      and run on the inputs; outputs that differ from the expected ones
      raise ValueError (and the package is removed).
    - ``persist_test_data``: the test data is also stored in the package
      (``neuropods.utils.eval_utils.load_and_test_neuropod`` runs it).
    - ``package_as_zip`` (default True, as the original): write one zip
      file; False writes a folder.
    - ``input_tensor_device`` (input name -> "GPU"/"CPU"), defaulting to
      ``default_input_tensor_device``: where the model wants each input.
    - ``custom_ops``: op libraries copied into the package, loaded with it.
    - ``platform_version_semver``: the framework versions the model needs.
    """

    test_input_data: Optional[Mapping[str, Any]] = None
    test_expected_out: Optional[Mapping[str, Any]] = None
    persist_test_data: bool = True
    package_as_zip: bool = True
    input_tensor_device: Optional[Mapping[str, str]] = None
    default_input_tensor_device: str = "GPU"
    custom_ops: Sequence[str] = ()
    platform_version_semver: str = "*"

    @classmethod
    def of(cls, packager: str, options: Mapping[str, Any]) -> "CommonOptions":
        """From a packager's keyword arguments; an unknown one is a
        TypeError, as Python raises for a function's own arguments."""
        known = {field.name for field in dataclasses.fields(cls)}
        for name in options:
            if name not in known:
                raise TypeError(f"{packager}() got an unexpected keyword argument '{name}'")
        return cls(**options)


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, str) and dtype == "string":
        return dtype
    if dtype is str or dtype is bytes:
        return "string"
    kind = np.dtype(dtype)
    if kind.kind in "USO":
        return "string"
    return str(kind.name)


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
    options: CommonOptions,
) -> Iterator[str]:
    """What every packager does around writing its model: a package folder
    with config.json (specs checked before the model is written), the
    custom ops and the test data in place; it yields the folder for the
    model's files (see `package_folder`), then runs the self-test."""
    with package_folder(neuropod_path, options.package_as_zip) as folder:
        write_config(
            folder,
            name=name,
            platform=platform,
            input_spec=input_spec,
            output_spec=output_spec,
            input_tensor_device=options.input_tensor_device,
            default_input_tensor_device=options.default_input_tensor_device,
            custom_ops=copy_custom_ops(folder, options.custom_ops),
            platform_version_semver=options.platform_version_semver,
        )
        if options.persist_test_data and options.test_input_data is not None:
            from neuropods.utils.eval_utils import save_test_data

            save_test_data(folder, options.test_input_data, options.test_expected_out)
        yield folder
    self_test(neuropod_path, options)


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


def self_test(neuropod_path: "os.PathLike[str] | str", options: "CommonOptions") -> None:
    """Loads the new package and checks its outputs against the expected ones
    (`eval_utils.load_and_test_neuropod`); on a failure removes the package
    and raises (ValueError, prefixed "self-test:", on a mismatch)."""
    if options.test_input_data is None:
        return
    from neuropods.utils.eval_utils import check_output_matches_expected, load_and_test_neuropod

    try:
        out = load_and_test_neuropod(neuropod_path, options.test_input_data, {})
        try:
            check_output_matches_expected(out, options.test_expected_out or {})
        except ValueError as e:
            raise ValueError(f"self-test: {e}") from None
    except BaseException:
        path = os.fspath(neuropod_path)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
        raise
