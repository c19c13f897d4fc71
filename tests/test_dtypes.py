"""Numeric models of every dtype libtorch takes, checked against torch's own
results for the same module and inputs."""

import numpy as np
import pytest
import torch

import models_for_tests as M
import neuropods_native
from helpers import load, spec, torch_out


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_mlp_matches_torch(mlp_package, mlp_module, batch):
    x = np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)
    with load(mlp_package) as model:
        out = model.infer({"x": x})["out"]
    expected = torch_out(mlp_module, x)
    assert out.dtype == np.float32 and out.shape == (batch, 4)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_mlp_spec_uses_batch_size_symbol(mlp_package):
    with load(mlp_package) as model:
        assert model.inputs == [{"name": "x", "dtype": "float32", "shape": ["batch_size", 8]}]
        assert model.outputs == [{"name": "out", "dtype": "float32", "shape": ["batch_size", 4]}]
        with pytest.raises(neuropods_native.ShapeError, match="'x'"):
            model.infer({"x": np.zeros((2, 7), np.float32)})


def test_mlp_float64_matches_torch(mlp64_package, mlp64_module):
    x = np.random.default_rng(7).standard_normal((9, 8))
    with load(mlp64_package) as model:
        assert model.inputs[0]["dtype"] == "float64"
        out = model.infer({"x": x})["out"]
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, torch_out(mlp64_module, x), rtol=1e-12, atol=1e-12)


def test_int64_model(int64_package):
    a = np.array([5, -3, 0, 2**40, -(2**40)], dtype=np.int64)
    b = np.array([7, -7, 1, 3, -(2**41) + 1], dtype=np.int64)
    with load(int64_package) as model:
        out = model.infer({"a": a, "b": b})
    expected = M.Int64Model()(torch.from_numpy(a), torch.from_numpy(b))
    assert set(out) == {"out", "total"}
    for name in ("out", "total"):
        assert out[name].dtype == np.int64
        np.testing.assert_array_equal(out[name], expected[name].numpy())


def test_bool_model(bool_package):
    rng = np.random.default_rng(11)
    a = rng.random((4, 6)) > 0.5
    b = rng.random((4, 6)) > 0.5
    b[2] = False
    a[2] = False
    with load(bool_package) as model:
        out = model.infer({"a": a, "b": b})
    expected = M.BoolModel()(torch.from_numpy(a), torch.from_numpy(b))
    assert out["and_not"].dtype == np.bool_ and out["any"].dtype == np.bool_
    np.testing.assert_array_equal(out["and_not"], expected["and_not"].numpy())
    np.testing.assert_array_equal(out["any"], expected["any"].numpy())
    assert not out["any"][2]


def test_float16_model(half_package):
    x = (np.arange(12, dtype=np.float32).reshape(4, 3) / 7 - 0.5).astype(np.float16)
    with load(half_package) as model:
        out = model.infer({"x": x})["out"]
    expected = M.HalfModel()(torch.from_numpy(x))["out"].numpy()
    assert out.dtype == np.float16 and out.shape == (4, 3)
    np.testing.assert_array_equal(out, expected)


def test_small_integer_dtypes(make_package):
    specs = [spec(name, dtype, (None,)) for name, dtype in [("i8", "int8"), ("i16", "int16"), ("i32", "int32"), ("u8", "uint8")]]
    path = make_package("small_ints", M.SmallIntsModel(), specs, specs)
    inputs = {
        "i8": np.array([-128, -1, 0, 100], np.int8),
        "i16": np.array([-30000, 7, 20000], np.int16),
        "i32": np.array([2**30, -5], np.int32),
        "u8": np.array([0, 127, 200, 255], np.uint8),
    }
    with load(path) as model:
        out = model.infer(inputs)
    expected = M.SmallIntsModel()(*(torch.from_numpy(inputs[k]) for k in ("i8", "i16", "i32", "u8")))
    for name, value in inputs.items():
        assert out[name].dtype == value.dtype
        np.testing.assert_array_equal(out[name], expected[name].numpy())


@pytest.mark.parametrize("dtype", ["uint16", "uint32", "uint64"])
def test_unsigned_wide_inputs_are_refused_by_torchscript(make_package, dtype):
    path = make_package(
        f"identity_{dtype}",
        M.HalfModel(),
        [spec("x", dtype, (None, 3))],
        [spec("out", dtype, (None, 3))],
    )
    with load(path) as model:
        with pytest.raises(neuropods_native.InvalidInputError, match=f"'x'.*{dtype}") as info:
            model.infer({"x": np.zeros((1, 3), dtype)})
    assert isinstance(info.value, ValueError)


def test_scalar_input_and_output(make_package):
    path = make_package("scalar", M.HalfModel(), [spec("x", "float64", ())], [spec("out", "float64", ())])
    with load(path) as model:
        out = model.infer({"x": np.array(3.0)})["out"]
    assert out.shape == () and out.dtype == np.float64
    assert out.item() == 3.0 * 2.5 + 1.0
