"""Test data that travels in a package, and running a package on it.

A packager given ``test_input_data`` (and ``test_expected_out``) stores
them in the package unless ``persist_test_data=False``, as the original
Neuropod does; ``load_and_test_neuropod(path)`` runs them later, e.g. after
copying a package to another machine or upgrading a framework. They are
stored in the core's tensor format (``neuropods_native.serialize``), not as
a pickle: reading a package's test data never runs code from it.
"""

import os
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

import neuropods_native
from neuropods._compat import Unpack
from neuropods.loader import LoadOptions, load_neuropod

TEST_DATA_DIR = "test_data"
INPUT_FILE = "test_input_data.bin"
EXPECTED_FILE = "test_expected_out.bin"

Arrays = Dict[str, np.ndarray]


def save_test_data(
    package_folder: str,
    test_input_data: Mapping[str, Any],
    test_expected_out: Optional[Mapping[str, Any]],
) -> None:
    """Writes the test data into a package folder being built."""
    folder = os.path.join(package_folder, TEST_DATA_DIR)
    os.makedirs(folder, exist_ok=True)
    for file, data in ((INPUT_FILE, test_input_data), (EXPECTED_FILE, test_expected_out)):
        if data is not None:
            arrays = {name: np.asarray(value) for name, value in data.items()}
            with open(os.path.join(folder, file), "wb") as f:
                f.write(neuropods_native.serialize(arrays))


def _read(neuropod_path: str, file: str) -> Optional[bytes]:
    relative = f"{TEST_DATA_DIR}/{file}"
    if os.path.isdir(neuropod_path):
        path = os.path.join(neuropod_path, relative)
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            return f.read()
    with zipfile.ZipFile(neuropod_path) as archive:
        try:
            return archive.read(relative)
        except KeyError:
            return None


def _arrays(data: Optional[bytes], what: str) -> Optional[Arrays]:
    if data is None:
        return None
    value = neuropods_native.deserialize(data)
    if not isinstance(value, dict):
        raise ValueError(f"the package's {what} is not a dict of arrays")
    return value


def load_test_data(neuropod_path: "os.PathLike[str] | str") -> Optional[Tuple[Arrays, Optional[Arrays]]]:
    """The test inputs and expected outputs stored in a package (folder or
    zip), or None if it has none."""
    path = os.fspath(neuropod_path)
    inputs = _arrays(_read(path, INPUT_FILE), "test input data")
    if inputs is None:
        return None
    return inputs, _arrays(_read(path, EXPECTED_FILE), "expected test output")


def has_test_data(files: List[str]) -> bool:
    """Whether a package with these files (relative paths) carries test data."""
    return f"{TEST_DATA_DIR}/{INPUT_FILE}" in files


def _matches(expected: Any, actual: np.ndarray) -> bool:
    expected = np.asarray(expected)
    if expected.dtype.kind in "USOT" or actual.dtype.kind in "USOT":
        # Element by element as Python str: numpy cannot cast its
        # variable-width strings (kind T) to fixed-width ones in bulk.
        def as_str(a: np.ndarray) -> List[str]:
            return [x.decode() if isinstance(x, bytes) else str(x) for x in a.ravel().tolist()]

        return expected.shape == actual.shape and as_str(expected) == as_str(actual)
    return expected.shape == actual.shape and bool(np.allclose(expected, actual))


def check_output_matches_expected(out: Mapping[str, np.ndarray], expected_out: Mapping[str, Any]) -> None:
    """Raises ValueError naming the first expected output that is missing
    or differs (numbers: ``np.allclose``; strings: equal)."""
    for name, expected in expected_out.items():
        if name not in out:
            raise ValueError(f"output '{name}' is missing (model returned {sorted(out)})")
        if not _matches(expected, out[name]):
            raise ValueError(
                f"output '{name}' differs from test_expected_out:\n"
                f"expected {np.asarray(expected)!r}\ngot      {out[name]!r}"
            )


def load_and_test_neuropod(
    neuropod_path: "os.PathLike[str] | str",
    test_input_data: Optional[Mapping[str, Any]] = None,
    test_expected_out: Optional[Mapping[str, Any]] = None,
    neuropod_load_args: Optional[LoadOptions] = None,
    **load_options: Unpack[LoadOptions],
) -> Arrays:
    """Loads a package, runs it on ``test_input_data`` and checks the outputs
    against ``test_expected_out``; returns the outputs. Without
    ``test_input_data`` it uses the test data stored in the package (and its
    expected outputs, unless ``test_expected_out`` is given). Load options
    (``use_ope=True``...) come as ``neuropod_load_args``, as in the
    original, or as keyword arguments. Raises ValueError if an output
    differs or if there is no test data."""
    if test_input_data is None:
        stored = load_test_data(neuropod_path)
        if stored is None:
            raise ValueError(
                f"no test_input_data given, and {os.fspath(neuropod_path)} stores none "
                "(package it with test_input_data and persist_test_data=True)"
            )
        test_input_data, stored_expected = stored
        if test_expected_out is None:
            test_expected_out = stored_expected
    options: LoadOptions = {**(neuropod_load_args or {}), **load_options}
    with load_neuropod(neuropod_path, **options) as model:
        out = model.infer(dict(test_input_data))
    if test_expected_out is not None:
        check_output_matches_expected(out, test_expected_out)
    return out
