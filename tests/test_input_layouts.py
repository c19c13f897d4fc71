"""Inputs in every memory layout numpy has: the bindings borrow C-contiguous
native arrays and copy the rest once; the results must be the same."""

import numpy as np
import pytest

import neuropods_native
from helpers import load, torch_out


@pytest.fixture(scope="module")
def mlp(mlp_package, mlp_module):
    model = load(mlp_package)
    yield model, mlp_module
    model.close()


def _base(rows=6):
    return np.random.default_rng(rows).standard_normal((rows, 8)).astype(np.float32)


def _unaligned(a: np.ndarray) -> np.ndarray:
    raw = np.zeros(a.nbytes + 1, np.uint8)
    view = np.frombuffer(raw.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    view[...] = a
    return view


LAYOUTS = {
    "c_contiguous": lambda a: a,
    "fortran": np.asfortranarray,
    "transposed": lambda a: np.ascontiguousarray(a.T).T,
    "row_slice": lambda a: np.repeat(a, 2, axis=0)[::2],
    "column_slice": lambda a: np.repeat(a, 2, axis=1)[:, 1::2],
    "negative_stride": lambda a: a[::-1].copy()[::-1],
    "big_endian": lambda a: a.astype(">f4"),
    "big_endian_fortran": lambda a: np.asfortranarray(a.astype(">f4")),
    "unaligned": _unaligned,
    "broadcast": None,  # handled below
}


@pytest.mark.parametrize("layout", [k for k in LAYOUTS if k != "broadcast"])
def test_layouts_give_same_result(mlp, layout):
    model, module = mlp
    base = _base()
    arr = LAYOUTS[layout](base)
    np.testing.assert_array_equal(arr, base)  # same values, other layout
    out = model.infer({"x": arr})["out"]
    np.testing.assert_allclose(out, torch_out(module, base), rtol=1e-5, atol=1e-6)


def test_layout_properties_are_what_the_test_claims():
    base = _base()
    assert not LAYOUTS["fortran"](base).flags.c_contiguous
    assert not LAYOUTS["row_slice"](base).flags.c_contiguous
    assert LAYOUTS["big_endian"](base).dtype.byteorder == ">"
    assert not LAYOUTS["unaligned"](base).flags.aligned


def test_broadcast_input(mlp):
    model, module = mlp
    row = np.linspace(-1, 1, 8, dtype=np.float32)
    arr = np.broadcast_to(row, (5, 8))
    assert arr.strides[0] == 0
    out = model.infer({"x": arr})["out"]
    np.testing.assert_allclose(out, torch_out(module, np.tile(row, (5, 1))), rtol=1e-5, atol=1e-6)


def test_inputs_are_not_modified(addition_model):
    x = np.arange(4, dtype=np.float32)
    y = x.astype(">f4")
    x_before, y_before = x.copy(), y.copy()
    out = addition_model.infer({"x": x, "y": y})["out"]
    np.testing.assert_array_equal(out, x_before * 2)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, y_before)
    assert y.dtype.byteorder == ">"


def test_big_endian_other_dtypes(int64_package):
    a = np.array([1, -2, 3], dtype=">i8")
    b = np.array([4, 5, -6], dtype=">i8")
    with load(int64_package) as model:
        out = model.infer({"a": a, "b": b})
    np.testing.assert_array_equal(out["out"], a.astype(np.int64) * 3 - np.floor_divide(b.astype(np.int64), 2))


@pytest.mark.parametrize("layout", ["c_contiguous", "fortran", "transposed", "big_endian", "unaligned"])
def test_readonly_layouts(mlp, layout):
    # Read-only arrays are copied before libtorch sees them; the copy must
    # keep the values whatever the source layout.
    model, module = mlp
    base = _base()
    arr = LAYOUTS[layout](base)
    arr.setflags(write=False)
    out = model.infer({"x": arr})["out"]
    np.testing.assert_allclose(out, torch_out(module, base), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(arr, base)


def test_readonly_input(addition_model):
    x = np.arange(3, dtype=np.float32)
    x.setflags(write=False)
    np.testing.assert_array_equal(addition_model.infer({"x": x, "y": x})["out"], [0.0, 2.0, 4.0])


def test_empty_batch(mlp):
    model, _ = mlp
    out = model.infer({"x": np.zeros((0, 8), np.float32)})["out"]
    assert out.shape == (0, 4) and out.dtype == np.float32


def test_wrong_dtype_is_not_silently_converted(mlp):
    model, _ = mlp
    with pytest.raises(neuropods_native.DTypeError, match="'x'.*float32.*float64"):
        model.infer({"x": _base().astype(np.float64)})
    with pytest.raises(neuropods_native.DTypeError, match="'x'.*float32.*float16"):
        model.infer({"x": _base().astype(np.float16)})


@pytest.fixture(scope="module")
def inplace_package(make_package):
    from models_for_tests import InPlaceModel
    from helpers import spec

    return make_package("inplace", InPlaceModel(), [spec("x", "float32", (None,))], [spec("y", "float32", (None,))])


def test_inplace_model_result(inplace_package):
    with load(inplace_package) as model:
        out = model.infer({"x": np.arange(3, dtype=np.float32)})["y"]
    np.testing.assert_array_equal(out, [1.0, 3.0, 5.0])


# Guards a bug this suite found (since fixed), as it was: read-only numpy inputs are lent to
# libtorch as writable tensors. tensor_from_numpy (crates/neuropods-py/src/convert.rs) borrows
# any C-contiguous array without checking flags.writeable, and the backend wraps it with
# from_blob, so a model that works in place (x.mul_(2)) writes into read-only memory, here an
# immutable bytes object.
def test_inplace_model_does_not_write_into_readonly_input(inplace_package):
    raw = np.arange(3, dtype=np.float32).tobytes()
    x = np.frombuffer(raw, np.float32)
    assert not x.flags.writeable
    with load(inplace_package) as model:
        out = model.infer({"x": x})["y"]
    np.testing.assert_array_equal(out, [1.0, 3.0, 5.0])
    assert raw == np.arange(3, dtype=np.float32).tobytes()


# Guards a bug this suite found (since fixed), as it was: the 'copy' of an output that aliases
# an input writes into the input: output_from_torch (crates/neuropods-torchscript/src/lib.rs)
# calls cpu.f_clone(&cpu), i.e. clone_out(out=cpu, self=cpu), which copies the borrowed input
# onto itself; for bool data libtorch rewrites non-0/1 bytes as 1, so an immutable bytes object
# changes.
def test_identity_model_does_not_write_into_readonly_input(make_package):
    from models_for_tests import IdentityModel
    from helpers import spec

    path = make_package(
        "identity_bool",
        IdentityModel(),
        [spec("x", "bool", ("n",))],
        [spec("same", "bool", ("n",)), spec("tail", "bool", (None,))],
    )
    raw = bytes([0, 1, 2, 255, 0])
    x = np.frombuffer(raw, dtype=bool)
    with load(path) as model:
        out = model.infer({"x": x})
    assert out["same"].tolist() == [False, True, True, True, False]
    assert raw == bytes([0, 1, 2, 255, 0]), list(raw)
