"""create_torchscript_neuropod: layout, config, manifest, self-test, refusals."""

import hashlib
import json
import os
import warnings

import numpy as np
import pytest
import torch

import models_for_tests as M
from helpers import ADD_INPUT_SPEC, ADD_OUTPUT_SPEC, jit_save, load, script, spec
from neuropods.packagers import create_torchscript_neuropod


def package(path, module=None, **kwargs):
    """The packager, minus torch 2.13's deprecation warning for torch.jit.save."""
    kwargs.setdefault("input_spec", ADD_INPUT_SPEC)
    kwargs.setdefault("package_as_zip", False)  # a folder: tests look inside
    kwargs.setdefault("output_spec", ADD_OUTPUT_SPEC)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        return create_torchscript_neuropod(str(path), kwargs.pop("model_name", "pkg"), module=module, **kwargs)


@pytest.fixture(scope="module")
def scripted_add():
    return script(M.AdditionModel())


def _leftovers(folder):
    return [n for n in os.listdir(folder) if n.startswith(".neuropod-")]


def test_layout_and_config(tmp_path, scripted_add):
    path = tmp_path / "add"
    package(path, scripted_add, model_name="my_model", input_tensor_device={"y": "CPU"})
    files = sorted(
        os.path.relpath(os.path.join(root, f), path) for root, _, names in os.walk(path) for f in names
    )
    assert files == ["0/data/model.pt", "config.json", "manifest.json"]
    with open(path / "config.json") as f:
        config = json.load(f)
    assert config == {
        "name": "my_model",
        "platform": "torchscript",
        "platform_version_semver": "*",
        "input_spec": [
            {"name": "x", "dtype": "float32", "shape": ["num_inputs"]},
            {"name": "y", "dtype": "float32", "shape": ["num_inputs"]},
        ],
        "output_spec": [{"name": "out", "dtype": "float32", "shape": [None]}],
        "input_tensor_device": {"x": "GPU", "y": "CPU"},
        "custom_ops": [],
    }
    assert _leftovers(tmp_path) == []


def test_manifest_lists_sha256_of_every_file(tmp_path, scripted_add):
    path = tmp_path / "add"
    package(path, scripted_add)
    with open(path / "manifest.json") as f:
        manifest = json.load(f)
    assert manifest["manifest_version"] == 1
    assert sorted(manifest["files"]) == ["0/data/model.pt", "config.json"]
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((path / rel).read_bytes()).hexdigest() == digest


def test_numpy_and_python_dtypes_in_spec(tmp_path):
    path = tmp_path / "concat"
    package(
        path,
        script(M.ConcatModel()),
        input_spec=[spec("left", str, ("n",)), spec("right", np.dtype("U"), ("n",))],
        output_spec=[spec("joined", "string", ("n",)), spec("lengths", np.int64, ("n",))],
    )
    with load(str(path)) as model:
        assert [s["dtype"] for s in model.inputs] == ["string", "string"]
        assert [s["dtype"] for s in model.outputs] == ["string", "int64"]


def test_module_path(tmp_path, scripted_add):
    saved = tmp_path / "saved_model.pt"
    jit_save(scripted_add, str(saved))
    path = tmp_path / "from_file"
    package(path, None, module_path=str(saved))
    assert (path / "0" / "data" / "model.pt").read_bytes() == saved.read_bytes()
    with load(str(path)) as model:
        out = model.infer({"x": np.ones(2, np.float32), "y": np.ones(2, np.float32)})
    assert out["out"].tolist() == [2.0, 2.0]


def test_traced_module(tmp_path, mlp_module):
    example = torch.randn(3, 8)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        traced = torch.jit.trace(M.DictWrapper(mlp_module), example, strict=False)
    path = tmp_path / "traced"
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    with torch.no_grad():
        expected = mlp_module(torch.from_numpy(x)).numpy()
    package(
        path,
        traced,
        input_spec=[spec("x", "float32", ("batch", 8))],
        output_spec=[spec("out", "float32", ("batch", 4))],
        test_input_data={"x": x},
        test_expected_out={"out": expected},
    )
    assert path.is_dir()


def test_module_and_module_path_are_exclusive(tmp_path, scripted_add):
    with pytest.raises(ValueError, match="exactly one"):
        package(tmp_path / "both", scripted_add, module_path="x.pt")
    with pytest.raises(ValueError, match="exactly one"):
        package(tmp_path / "neither", None)
    assert os.listdir(tmp_path) == []


def test_refuses_existing_path(tmp_path, scripted_add):
    path = tmp_path / "add"
    package(path, scripted_add)
    before = (path / "config.json").read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        package(path, scripted_add, model_name="other")
    assert (path / "config.json").read_bytes() == before
    zip_path = tmp_path / "add.zip"
    zip_path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        package(zip_path, scripted_add, package_as_zip=True)
    assert zip_path.read_bytes() == b"precious"


@pytest.mark.parametrize("as_zip", [False, True])
def test_self_test_passes(tmp_path, scripted_add, as_zip):
    path = tmp_path / ("add.zip" if as_zip else "add")
    x = np.arange(4, dtype=np.float32)
    package(path, scripted_add, package_as_zip=as_zip, test_input_data={"x": x, "y": x}, test_expected_out={"out": x * 2})
    assert path.is_file() if as_zip else path.is_dir()


@pytest.mark.parametrize("as_zip", [False, True])
def test_self_test_mismatch_raises_and_removes_package(tmp_path, scripted_add, as_zip):
    path = tmp_path / ("add.zip" if as_zip else "add")
    x = np.arange(4, dtype=np.float32)
    with pytest.raises(ValueError, match="'out' differs from test_expected_out") as info:
        package(path, scripted_add, package_as_zip=as_zip, test_input_data={"x": x, "y": x}, test_expected_out={"out": x * 3})
    assert not isinstance(info.value, FileExistsError)
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_self_test_missing_output_raises(tmp_path, scripted_add):
    path = tmp_path / "add"
    x = np.arange(2, dtype=np.float32)
    with pytest.raises(ValueError, match="output 'nope' is missing"):
        package(path, scripted_add, test_input_data={"x": x, "y": x}, test_expected_out={"nope": x})
    assert not path.exists()


def test_self_test_failure_in_model_removes_package(tmp_path, scripted_add):
    import neuropods_native

    path = tmp_path / "add"
    with pytest.raises(neuropods_native.DTypeError, match="'x'"):
        package(path, scripted_add, test_input_data={"x": np.zeros(2), "y": np.zeros(2, np.float32)})
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_self_test_compares_strings(tmp_path):
    path = tmp_path / "upper"
    with pytest.raises(ValueError, match="'upper' differs"):
        package(
            path,
            script(M.UpperModel()),
            input_spec=[spec("words", "string", ("n",))],
            output_spec=[spec("upper", "string", ("n",))],
            test_input_data={"words": np.array(["ab"])},
            test_expected_out={"upper": np.array(["ab"])},
        )
    assert not path.exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_spec": [{"name": "x", "dtype": "float32"}]}, r"input_spec\[0\] needs name, dtype and shape"),
        ({"output_spec": [spec("out", "float31", (None,))]}, None),
        ({"input_spec": [spec("x", "float32", (0,))]}, r"input_spec\[0\]\.shape\[0\]"),
        ({"input_tensor_device": {"nope": "CPU"}}, "unknown inputs"),
        ({"default_input_tensor_device": "TPU"}, "input_tensor_device"),
        ({"model_name": ""}, "name"),
    ],
)
def test_invalid_specs_leave_nothing_behind(tmp_path, scripted_add, kwargs, match):
    path = tmp_path / "bad"
    with pytest.raises((ValueError, TypeError), match=match):
        package(path, scripted_add, **kwargs)
    assert os.listdir(tmp_path) == []


def test_creates_missing_parent_folders(tmp_path, scripted_add):
    path = tmp_path / "a" / "b" / "add"
    package(path, scripted_add)
    with load(str(path)) as model:
        assert model.name == "pkg"


def test_unknown_dtype_in_spec_is_value_error_naming_the_entry(tmp_path):
    with pytest.raises(ValueError, match=r"input_spec\[0\] \('x'\): unknown dtype 'floaty'"):
        create_torchscript_neuropod(
            tmp_path / "bad_dtype",
            "bad_dtype",
            module_path=str(tmp_path / "unused.pt"),
            input_spec=[{"name": "x", "dtype": "floaty", "shape": (1,)}],
            output_spec=[],
        )
    assert not (tmp_path / "bad_dtype").exists()


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_test_data_is_stored_in_the_package_and_runs_later(tmp_path, as_zip):
    from neuropods.utils.eval_utils import load_and_test_neuropod, load_test_data

    path = tmp_path / ("upper.zip" if as_zip else "upper")
    words = np.array(["ab", "é"])
    package(
        path, script(M.UpperModel()), package_as_zip=as_zip,
        input_spec=[spec("words", "string", ("n",))], output_spec=[spec("upper", "string", ("n",))],
        test_input_data={"words": words}, test_expected_out={"upper": np.array(["AB", "é"])},  # ASCII-only upper()
    )
    stored_input, stored_expected = load_test_data(path)
    assert list(stored_input["words"]) == ["ab", "é"]
    assert list(stored_expected["upper"]) == ["AB", "é"]
    out = load_and_test_neuropod(path)
    assert list(out["upper"]) == ["AB", "é"]
    # Given data wins over the stored data; a mismatch names the output.
    with pytest.raises(ValueError, match="output 'upper' differs from test_expected_out"):
        load_and_test_neuropod(path, test_expected_out={"upper": np.array(["no", "match"])})
    out = load_and_test_neuropod(path, {"words": np.array(["x"])}, {"upper": np.array(["X"])},
                                 neuropod_load_args={"use_ope": True})
    assert list(out["upper"]) == ["X"]


def test_test_data_is_not_stored_when_asked_not_to(tmp_path, scripted_add):
    from neuropods.utils.eval_utils import load_and_test_neuropod, load_test_data

    path = tmp_path / "add"
    x = np.arange(3, dtype=np.float32)
    package(path, scripted_add, test_input_data={"x": x, "y": x}, persist_test_data=False)
    assert load_test_data(path) is None and not (path / "test_data").exists()
    with pytest.raises(ValueError, match="no test_input_data given, and .* stores none"):
        load_and_test_neuropod(path)
    out = load_and_test_neuropod(path, {"x": x, "y": x}, {"out": x * 2})
    np.testing.assert_array_equal(out["out"], x * 2)


def test_test_data_is_in_the_manifest(tmp_path, scripted_add):
    path = tmp_path / "add"
    x = np.arange(3, dtype=np.float32)
    package(path, scripted_add, test_input_data={"x": x, "y": x}, test_expected_out={"out": x * 2})
    manifest = json.loads((path / "manifest.json").read_text())
    assert {"test_data/test_input_data.bin", "test_data/test_expected_out.bin"} <= set(manifest["files"])


def test_unknown_packager_option_is_a_type_error(tmp_path, scripted_add):
    with pytest.raises(TypeError, match="create_torchscript_neuropod\\(\\) got an unexpected keyword argument 'packge_as_zip'"):
        package(tmp_path / "add", scripted_add, packge_as_zip=True)
    assert not (tmp_path / "add").exists()


def test_packages_are_zips_by_default_as_in_the_original(tmp_path, scripted_add):
    import zipfile

    path = tmp_path / "add.zip"
    x = np.arange(3, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        create_torchscript_neuropod(str(path), "add", module=scripted_add, input_spec=ADD_INPUT_SPEC,
                                    output_spec=ADD_OUTPUT_SPEC, test_input_data={"x": x, "y": x})
    assert zipfile.is_zipfile(path)
    with load(path) as model:
        np.testing.assert_array_equal(model.infer({"x": x, "y": x})["out"], x * 2)


@pytest.mark.parametrize(
    "input_spec, expected",
    [
        ([spec("x", "float32", (None,)), spec("y", "float32", (None,)), spec("z", "float32", (None,))],
         r"input_spec names \['z'\], which the module's forward does not take \(its arguments: \['x', 'y'\]\)"),
        ([spec("x", "float32", (None,))], r"the module's forward requires \['y'\], which input_spec does not name"),
    ],
    ids=["stray_input", "unfed_argument"],
)
@pytest.mark.parametrize("source", ["module", "module_path"])
def test_the_torchscript_packager_refuses_a_spec_forward_cannot_take(tmp_path, input_spec, expected, source):
    scripted = script(M.AdditionModel())
    given = {"module": scripted}
    if source == "module_path":
        jit_save(scripted, str(tmp_path / "model.pt"))
        given = {"module_path": str(tmp_path / "model.pt")}
    with pytest.raises(ValueError, match=expected):
        create_torchscript_neuropod(neuropod_path=tmp_path / "p", model_name="m", input_spec=input_spec,
                                    output_spec=ADD_OUTPUT_SPEC, **given)
    assert not (tmp_path / "p").exists()
