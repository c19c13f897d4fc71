"""String tensors: List[str] in and out, from '<U', 'S' and object arrays."""

import numpy as np
import pytest

import models_for_tests as M
import neuropods_native
from helpers import STRING_KIND, load, script

WORDS = ["hello", "Wörld", "", "mixed Case 42", "ß→𝄞"]


def _expected_upper(words):
    # TorchScript's own answer (its str.upper is ASCII-only, unlike Python's).
    return _scripted_upper(list(words))["upper"]


_scripted = {}


def _scripted_upper(words):
    if "upper" not in _scripted:
        _scripted["upper"] = script(M.UpperModel())
    return _scripted["upper"](words)


@pytest.mark.parametrize(
    "make_array",
    [
        pytest.param(lambda w: np.array(w), id="unicode"),
        pytest.param(lambda w: np.array(w, dtype=object), id="object"),
        pytest.param(lambda w: np.array(w, dtype="<U40"), id="wide-unicode"),
    ],
)
def test_upper_from_str_arrays(strings_package, make_array):
    words = make_array(WORDS)
    with load(strings_package) as model:
        out = model.infer({"words": words})["upper"]
    assert out.dtype.kind == STRING_KIND
    assert out.shape == (len(WORDS),)
    assert out.tolist() == _expected_upper(WORDS)


def test_upper_from_bytes_array(strings_package):
    words = ["abc", "déf", "x y"]
    data = np.array([w.encode("utf-8") for w in words])
    assert data.dtype.kind == "S"
    with load(strings_package) as model:
        out = model.infer({"words": data})["upper"]
    assert out.dtype.kind == STRING_KIND
    assert out.tolist() == _expected_upper(words)


def test_output_strings_keep_their_own_lengths(strings_package):
    words = ["a", "𝄞" * 9, "bb"]
    with load(strings_package) as model:
        out = model.infer({"words": np.array(words, dtype=object)})["upper"]
    # Variable-width on numpy >= 2; on 1.x, fixed width fits the longest.
    assert out.dtype == (np.dtypes.StringDType() if STRING_KIND == "T" else np.dtype("<U9"))
    assert out.tolist() == _expected_upper(words)


def test_empty_string_list(strings_package):
    with load(strings_package) as model:
        out = model.infer({"words": np.array([], dtype="<U1")})["upper"]
    assert out.shape == (0,) and out.dtype.kind == STRING_KIND


def test_concat_two_lists_and_tensor_output(concat_package):
    left = np.array(["alpha", "β", ""])
    right = np.array([b"one", b"two", b"3"])
    with load(concat_package) as model:
        out = model.infer({"left": left, "right": right})
    # TorchScript's len() counts UTF-8 bytes; compare with TorchScript itself.
    expected = script(M.ConcatModel())(left.tolist(), [r.decode() for r in right.tolist()])
    assert out["joined"].tolist() == expected["joined"]
    assert out["lengths"].dtype == np.int64
    np.testing.assert_array_equal(out["lengths"], expected["lengths"].numpy())


def test_string_symbol_mismatch(concat_package):
    with load(concat_package) as model:
        with pytest.raises(neuropods_native.ShapeError, match="'right'.*'n'"):
            model.infer({"left": np.array(["a", "b"]), "right": np.array(["c"])})


def test_object_array_with_non_str_is_refused(strings_package):
    with load(strings_package) as model:
        with pytest.raises(neuropods_native.InputTypeError, match="'words'.*element 1 is int") as info:
            model.infer({"words": np.array(["a", 5], dtype=object)})
    assert isinstance(info.value, TypeError)


def test_invalid_utf8_bytes_are_refused(strings_package):
    with load(strings_package) as model:
        with pytest.raises(neuropods_native.InputTypeError, match="'words'.*UTF-8"):
            model.infer({"words": np.array([b"ok", b"\xff\xfe"])})


def test_two_dimensional_strings_are_refused_by_torchscript(make_package):
    path = make_package(
        "upper_2d",
        M.UpperModel(),
        [{"name": "words", "dtype": "string", "shape": (None, None)}],
        [{"name": "upper", "dtype": "string", "shape": (None,)}],
    )
    with load(path) as model:
        with pytest.raises(neuropods_native.InvalidInputError, match="'words'.*1-D"):
            model.infer({"words": np.array([["a", "b"], ["c", "d"]])})


def test_string_input_to_numeric_spec_is_dtype_error(addition_model):
    with pytest.raises(neuropods_native.DTypeError, match="'x'.*float32.*string"):
        addition_model.infer({"x": np.array(["1.0"]), "y": np.ones(1, np.float32)})
