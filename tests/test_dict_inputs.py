"""Models whose forward takes one Dict argument."""

import numpy as np
import pytest
import torch

import models_for_tests as M
import neuropods_native
from helpers import load, script


def test_dict_of_tensors(dict_tensor_package):
    rng = np.random.default_rng(5)
    inputs = {
        "a": rng.standard_normal(6).astype(np.float32),
        "b": rng.standard_normal(6).astype(np.float32),
        "c": rng.standard_normal((2, 3)).astype(np.float32),
    }
    with load(dict_tensor_package) as model:
        out = model.infer(inputs)["out"]
    expected = M.DictTensorModel()({k: torch.from_numpy(v) for k, v in inputs.items()})["out"]
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-6)


def test_dict_of_tensors_missing_key_is_backend_error(dict_tensor_package):
    # The spec allows omitting inputs; the model itself then fails on the key.
    with load(dict_tensor_package) as model:
        with pytest.raises(neuropods_native.BackendError, match="torchscript"):
            model.infer({"a": np.ones(2, np.float32), "b": np.ones(2, np.float32)})


def test_dict_of_string_lists(dict_string_package):
    first = np.array(["Ada", "Alan", "Grace"])
    last = np.array(["Lovelace", "Turing", "Hopper"], dtype=object)
    with load(dict_string_package) as model:
        out = model.infer({"first": first, "last": last})["names"]
    expected = M.DictStringModel()({"first": first.tolist(), "last": last.tolist()})["names"]
    assert out.tolist() == expected == ["Lovelace, Ada", "Turing, Alan", "Hopper, Grace"]


def test_dict_of_union(dict_union_package):
    # TorchScript scripts Dict[str, Union[Tensor, List[str]]]: the backend
    # builds the dict with the schema's value type.
    values = np.array([[1.5, -2.0], [0.0, 4.25]], np.float32)
    labels = np.array(["cat", "dög"])
    with load(dict_union_package) as model:
        out = model.infer({"values": values, "labels": labels})
    # isinstance(x, List[str]) only works scripted: ask TorchScript itself.
    expected = script(M.DictUnionModel())({"values": torch.from_numpy(values), "labels": labels.tolist()})
    assert set(out) == {"scaled", "tagged"}
    np.testing.assert_array_equal(out["scaled"], expected["scaled"].numpy())
    assert out["tagged"].tolist() == expected["tagged"] == ["<cat>", "<dög>"]


def test_dict_model_unknown_key_is_refused_before_running(dict_string_package):
    with load(dict_string_package) as model:
        with pytest.raises(neuropods_native.UnknownTensorError, match="'middle'"):
            model.infer({"first": np.array(["a"]), "middle": np.array(["b"])})


def test_non_ascii_and_punctuated_tensor_names(make_package):
    names = ["größe", "😀 with space", "a.b[0]"]
    path = make_package(
        "unicode_names",
        M.RenamingDictModel(),
        [{"name": n, "dtype": "float32", "shape": (None,)} for n in names],
        [{"name": n + "→out", "dtype": "float32", "shape": (None,)} for n in names],
    )
    inputs = {n: np.arange(3, dtype=np.float32) + i for i, n in enumerate(names)}
    with load(path) as model:
        assert [s["name"] for s in model.inputs] == names
        out = model.infer(inputs)
    assert set(out) == {n + "→out" for n in names}
    for n in names:
        np.testing.assert_array_equal(out[n + "→out"], inputs[n] * 2)
    with load(path) as model:
        with pytest.raises(neuropods_native.UnknownTensorError, match="'grösse'"):
            model.infer({"grösse": inputs["größe"]})
