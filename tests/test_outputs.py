"""Output forms (dict, single tensor, tuple, namedtuple) and the life of
output arrays (read-only zero-copy views that outlive the model)."""

import gc

import numpy as np
import pytest
import torch

import models_for_tests as M
import neuropods_native
from helpers import STRING_KIND, load, spec


@pytest.fixture(scope="module")
def single_package(make_package):
    return make_package("single", M.SingleTensorModel(), [spec("x", "float32", (None, 2))], [spec("sq", "float32", (None, 2))])


@pytest.fixture(scope="module")
def tuple_package(make_package):
    return make_package(
        "tuple",
        M.TupleModel(),
        [spec("x", "float64", ("n", 3))],
        [spec("plus_one", "float64", ("n", 3)), spec("doubled", "float64", ("n", 3)), spec("col_sum", "float64", (3,))],
    )


@pytest.fixture(scope="module")
def namedtuple_package(make_package):
    # Spec order (total, product) differs from the namedtuple's field order.
    return make_package(
        "namedtuple",
        M.NamedTupleModel(),
        [spec("x", "int32", ("n",)), spec("y", "int32", ("n",))],
        [spec("total", "int32", ("n",)), spec("product", "int32", ("n",))],
    )


def test_dict_output(addition_model):
    out = addition_model.infer({"x": np.array([1, 2], np.float32), "y": np.array([3, 4], np.float32)})
    assert list(out) == ["out"]
    assert out["out"].tolist() == [4.0, 6.0]


def test_single_tensor_output_takes_the_spec_name(single_package):
    x = np.array([[1.0, 2.0], [-3.0, 0.5]], np.float32)
    with load(single_package) as model:
        out = model.infer({"x": x})
    assert set(out) == {"sq"}
    np.testing.assert_array_equal(out["sq"], M.SingleTensorModel()(torch.from_numpy(x)).numpy())


def test_tuple_output_maps_to_spec_order(tuple_package):
    x = np.random.default_rng(2).standard_normal((4, 3))
    with load(tuple_package) as model:
        out = model.infer({"x": x})
    plus_one, doubled, col_sum = M.TupleModel()(torch.from_numpy(x))
    assert set(out) == {"plus_one", "doubled", "col_sum"}
    np.testing.assert_array_equal(out["plus_one"], plus_one.numpy())
    np.testing.assert_array_equal(out["doubled"], doubled.numpy())
    np.testing.assert_allclose(out["col_sum"], col_sum.numpy())


def test_namedtuple_output_uses_field_names(namedtuple_package):
    x = np.array([1, 2, -3], np.int32)
    y = np.array([10, 20, 30], np.int32)
    with load(namedtuple_package) as model:
        out = model.infer({"x": x, "y": y})
    expected = M.NamedTupleModel()(torch.from_numpy(x), torch.from_numpy(y))
    assert set(out) == {"total", "product"}
    np.testing.assert_array_equal(out["total"], expected.total.numpy())
    np.testing.assert_array_equal(out["product"], expected.product.numpy())
    np.testing.assert_array_equal(out["total"], x + y)


def test_tuple_with_more_outputs_than_spec_is_backend_error(make_package):
    path = make_package("tuple_short_spec", M.TupleModel(), [spec("x", "float64", ("n", 3))], [spec("only", "float64", ("n", 3))])
    with load(path) as model:
        with pytest.raises(neuropods_native.BackendError, match=r"3 unnamed output\(s\).*1 \(only\)"):
            model.infer({"x": np.zeros((1, 3))})


def test_outputs_outlive_the_model(mlp_package, mlp_module):
    from helpers import torch_out

    x = np.random.default_rng(21).standard_normal((6, 8)).astype(np.float32)
    expected = torch_out(mlp_module, x)
    model = load(mlp_package)
    out = model.infer({"x": x})["out"]
    model.close()
    del model
    gc.collect()
    # Churn the allocator a little: freed memory would likely be reused.
    junk = [np.full((6, 4), 123.0, np.float32) for _ in range(100)]
    del junk
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_outputs_outlive_a_zip_model(addition_zip_package):
    model = load(addition_zip_package)
    out = model.infer({"x": np.arange(4, dtype=np.float32), "y": np.ones(4, np.float32)})
    del model
    gc.collect()
    assert out["out"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_outputs_are_read_only_zero_copy_views(mlp_package):
    with load(mlp_package) as model:
        out = model.infer({"x": np.ones((3, 8), np.float32)})["out"]
    assert out.base is not None
    assert type(out.base).__name__ == "TensorMemory"
    assert not out.flags.writeable
    assert out.flags.c_contiguous and out.flags.aligned
    with pytest.raises(ValueError, match="read-only"):
        out[0, 0] = 1.0
    with pytest.raises(ValueError):
        out.setflags(write=True)
    # A copy is an ordinary writable array.
    copy = out.copy()
    copy[0, 0] = 5.0
    assert copy[0, 0] == 5.0


def test_output_base_keeps_memory_alive(addition_package):
    model = load(addition_package)
    out = model.infer({"x": np.full(1000, 2.0, np.float32), "y": np.full(1000, 0.5, np.float32)})["out"]
    view = out[10:20]
    del out
    model.close()
    gc.collect()
    np.testing.assert_array_equal(view, np.full(10, 2.5, np.float32))


def test_output_from_model_state_is_stable(scale_package):
    # The output memory is libtorch's; it must not be shared with a model
    # buffer that a later call could change.
    x = np.array([[1.0, 1.0, 1.0]], np.float32)
    with load(scale_package) as model:
        first = model.infer({"x": x})["y"]
        second = model.infer({"x": x * 2})["y"]
    np.testing.assert_array_equal(first, [[4.0, 1.0, 3.5]])
    np.testing.assert_array_equal(second, [[5.0, -1.0, 4.0]])


# Guards a bug this suite found (since fixed), as it was: an output that aliases an input is not
# copied. TorchScriptModel::output_from_torch (crates/neuropods-torchscript/src/lib.rs) calls
# `cpu.f_clone(&cpu)`, which is tch's clone_out(out=cpu, self=cpu): it copies the tensor onto
# itself and returns the same memory. The output array therefore views the caller's input array
# (and, for inputs the bindings copied, freed memory).
def test_output_never_aliases_input(identity_package):
    x = np.arange(6, dtype=np.float32)
    with load(identity_package) as model:
        out = model.infer({"x": x})
    assert not np.shares_memory(out["same"], x)
    assert not np.shares_memory(out["tail"], x)
    x[:] = -1.0  # the caller reuses its input buffer
    assert out["same"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert out["tail"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_identity_model_values(identity_package):
    # What does work today: the values are right at the time of the call.
    x = np.arange(6, dtype=np.float32) * 3
    with load(identity_package) as model:
        out = model.infer({"x": x})
    assert out["same"].tolist() == (np.arange(6) * 3).tolist()
    assert out["tail"].tolist() == (np.arange(1, 6) * 3).tolist()


def test_bare_string_list_output(make_package):
    path = make_package("string_list_out", M.StringListOutputModel(), [spec("words", "string", ("n",))], [spec("doubled", "string", ("n",))])
    with load(path) as model:
        out = model.infer({"words": np.array(["ab", "", "x"])})
    assert set(out) == {"doubled"}
    assert out["doubled"].dtype.kind == STRING_KIND
    assert out["doubled"].tolist() == ["abab", "", "xx"]


def test_tuple_of_strings_and_tensor(make_package):
    path = make_package(
        "mixed_tuple",
        M.MixedTupleModel(),
        [spec("words", "string", ("n",))],
        [spec("reversed", "string", ("n",)), spec("lengths", "int32", ("n",))],
    )
    words = ["one", "three", "sixteen"]
    with load(path) as model:
        out = model.infer({"words": np.array(words)})
    rev, lengths = M.MixedTupleModel()(words)
    assert out["reversed"].tolist() == rev
    np.testing.assert_array_equal(out["lengths"], lengths.numpy())
    assert out["lengths"].dtype == np.int32


def test_non_contiguous_outputs_are_made_contiguous(make_package):
    path = make_package(
        "transpose",
        M.TransposeModel(),
        [spec("x", "float32", ("r", "c"))],
        [spec("t", "float32", ("c", "r")), spec("every_other", "float32", ("r", None))],
    )
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    with load(path) as model:
        out = model.infer({"x": x})
    expected = M.TransposeModel()(torch.from_numpy(x))
    for name in ("t", "every_other"):
        assert out[name].flags.c_contiguous
        np.testing.assert_array_equal(out[name], expected[name].numpy())
