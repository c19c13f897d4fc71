"""The addition model end to end: metadata, infer, context manager, the
native class, path types and load options."""

import logging
import pathlib

import numpy as np
import pytest
import torch

import neuropods
import neuropods_native
from helpers import load
from neuropods.loader import load_neuropod


def test_metadata(addition_package):
    with load_neuropod(addition_package) as model:
        assert model.name == "addition_model"
        assert model.platform == "torchscript"
        assert model.inputs == [
            {"name": "x", "dtype": "float32", "shape": ["num_inputs"]},
            {"name": "y", "dtype": "float32", "shape": ["num_inputs"]},
        ]
        assert model.outputs == [{"name": "out", "dtype": "float32", "shape": [None]}]
        assert isinstance(model.inputs, list) and isinstance(model.inputs[0]["shape"], list)
        assert "addition_model" in repr(model) and "torchscript" in repr(model)


def test_infer_returns_numpy_sum(addition_model):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(7).astype(np.float32)
    y = rng.standard_normal(7).astype(np.float32)
    out = addition_model.infer({"x": x, "y": y})
    assert isinstance(out, dict) and set(out) == {"out"}
    result = out["out"]
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.float32 and result.shape == (7,)
    expected = (torch.from_numpy(x) + torch.from_numpy(y)).numpy()
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("n", [0, 1, 3, 1000])
def test_symbol_accepts_any_consistent_size(addition_model, n):
    x = np.linspace(-1, 1, n, dtype=np.float32)
    y = np.full(n, 0.25, dtype=np.float32)
    np.testing.assert_array_equal(addition_model.infer({"x": x, "y": y})["out"], x + y)


def test_context_manager_closes(addition_package):
    with load_neuropod(addition_package) as model:
        out = model.infer({"x": np.ones(2, np.float32), "y": np.ones(2, np.float32)})
    np.testing.assert_array_equal(out["out"], [2.0, 2.0])
    with pytest.raises(neuropods_native.ModelClosedError):
        model.infer({"x": np.ones(2, np.float32), "y": np.ones(2, np.float32)})
    assert "closed" in repr(model)


def test_context_manager_propagates_exceptions_and_closes(addition_package):
    with pytest.raises(KeyError, match="from inside"):
        with load_neuropod(addition_package) as model:
            raise KeyError("from inside")
    with pytest.raises(neuropods_native.ModelClosedError):
        _ = model.name


def test_native_class_directly(addition_package):
    model = neuropods_native.Neuropod(addition_package)
    assert model.name == "addition_model"
    x = np.array([1.5, -2.0, 3.25], np.float32)
    y = np.array([0.5, 2.0, -0.25], np.float32)
    np.testing.assert_array_equal(model.infer({"x": x, "y": y})["out"], x + y)
    model.close()
    model.close()  # closing twice is harmless


def test_loader_returns_native_class(addition_package):
    assert neuropods.loader.Neuropod is neuropods_native.Neuropod
    with load_neuropod(addition_package) as model:
        assert isinstance(model, neuropods_native.Neuropod)


def test_pathlike_path(addition_package):
    with load_neuropod(pathlib.Path(addition_package)) as model:
        out = model.infer({"x": np.ones(1, np.float32), "y": np.ones(1, np.float32)})
        assert out["out"].tolist() == [2.0]


def test_version_is_exposed():
    assert isinstance(neuropods.__version__, str) and neuropods.__version__
    assert neuropods.__version__ == neuropods_native.__version__
    assert neuropods.NeuropodError is neuropods_native.NeuropodError


def test_omitted_optional_input_uses_default(make_package):
    from models_for_tests import DefaultArgModel

    path = make_package(
        "default_arg",
        DefaultArgModel(),
        [
            {"name": "x", "dtype": "float32", "shape": ("n",)},
            {"name": "bias", "dtype": "float32", "shape": ("n",)},
        ],
        [{"name": "y", "dtype": "float32", "shape": ("n",)}],
    )
    x = np.array([1.0, 2.0, 3.0], np.float32)
    bias = np.array([10.0, 20.0, 30.0], np.float32)
    with load(path) as model:
        np.testing.assert_array_equal(model.infer({"x": x})["y"], x - 1)
        np.testing.assert_array_equal(model.infer({"x": x, "bias": bias})["y"], x + bias)


def test_intra_op_threads_sets_libtorch_threads(addition_package):
    before = torch.get_num_threads()
    try:
        with load(addition_package, intra_op_threads=1) as model:
            assert torch.get_num_threads() == 1
            out = model.infer({"x": np.ones(3, np.float32), "y": np.ones(3, np.float32)})
            assert out["out"].tolist() == [2.0, 2.0, 2.0]
    finally:
        torch.set_num_threads(before)


def test_none_options_are_accepted(addition_package):
    with load(addition_package, visible_gpu=None, intra_op_threads=None, verify_manifest=False) as m:
        assert m.name == "addition_model"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_visible_gpu_without_cuda_falls_back_with_logged_warning(addition_package, caplog):
    with caplog.at_level(logging.WARNING, logger="neuropods"):
        with load(addition_package, visible_gpu=0) as model:
            out = model.infer({"x": np.ones(2, np.float32), "y": np.ones(2, np.float32)})
    np.testing.assert_array_equal(out["out"], [2.0, 2.0])
    messages = [r.getMessage() for r in caplog.records if r.name == "neuropods"]
    assert any("visible_gpu=0" in m and "CPU" in m for m in messages), messages


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_gpu(mlp_package, mlp_module):
    from helpers import torch_out

    x = np.random.default_rng(3).standard_normal((5, 8)).astype(np.float32)
    with load(mlp_package, visible_gpu=0) as model:
        out = model.infer({"x": x})["out"]
    np.testing.assert_allclose(out, torch_out(mlp_module, x), rtol=1e-4, atol=1e-5)
