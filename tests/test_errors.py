"""Every error kind: the exact class, its builtin base, and a message that
names the culprit."""

import json
import os
import shutil

import numpy as np
import pytest

import models_for_tests as M
import neuropods_native
from helpers import copy_package, load, spec
from neuropods_native import errors as E

F32 = np.arange(3, dtype=np.float32)


def test_every_error_is_a_neuropod_error():
    for name in E.__all__:
        cls = getattr(neuropods_native, name)
        assert cls is getattr(E, name)
        assert issubclass(cls, neuropods_native.NeuropodError)
        assert issubclass(cls, Exception)


# ------------------------------------------------------------------ loading


def test_missing_path(tmp_path):
    missing = tmp_path / "no_such_package"
    with pytest.raises(neuropods_native.PackageNotFoundError) as info:
        load(str(missing))
    assert isinstance(info.value, FileNotFoundError)
    assert str(missing) in str(info.value)


def test_missing_path_is_catchable_as_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        neuropods_native.Neuropod(str(tmp_path / "nope.zip"))


@pytest.fixture(scope="module")
def base_config(addition_package):
    with open(os.path.join(addition_package, "config.json")) as f:
        return json.load(f)


@pytest.fixture
def package_with_config(addition_package, tmp_path):
    """Writes config.json text (or a dict) into a copy of the addition package."""

    def make(config) -> str:
        path = copy_package(addition_package, str(tmp_path / "pkg"))
        text = config if isinstance(config, str) else json.dumps(config)
        with open(os.path.join(path, "config.json"), "w") as f:
            f.write(text)
        return path

    return make


def _set(path, value):
    def mutate(config):
        target = config
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return config

    return mutate


def _delete(path):
    def mutate(config):
        target = config
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return config

    return mutate


CONFIG_CASES = {
    # id: (mutation or raw text, substrings the message must contain)
    "invalid_json": ('{"name": "x", ', ["<document>", "not valid JSON"]),
    "not_an_object": ("[1, 2]", ["<document>", "expected a JSON object"]),
    "missing_name": (_delete(["name"]), ["name: missing"]),
    "missing_platform": (_delete(["platform"]), ["platform: missing"]),
    "missing_input_spec": (_delete(["input_spec"]), ["input_spec: missing"]),
    "missing_output_spec": (_delete(["output_spec"]), ["output_spec: missing"]),
    "missing_spec_shape": (_delete(["output_spec", 0, "shape"]), ["output_spec[0].shape", "missing"]),
    "missing_spec_dtype": (_delete(["input_spec", 1, "dtype"]), ["input_spec[1].dtype", "missing"]),
    "empty_name": (_set(["name"], ""), ["name", "must not be empty"]),
    "name_not_string": (_set(["name"], 42), ["name", "expected a string, got a number"]),
    "unknown_platform": (_set(["platform"], "caffe2"), ["platform", "caffe2"]),
    "unknown_dtype": (_set(["input_spec", 1, "dtype"], "float31"), ["input_spec[1].dtype", "float31"]),
    "zero_dim": (_set(["input_spec", 0, "shape"], [0]), ["input_spec[0].shape[0]", "positive integer"]),
    "negative_dim": (_set(["output_spec", 0, "shape"], [4, -2]), ["output_spec[0].shape[1]", "-2"]),
    "float_dim": (_set(["input_spec", 0, "shape"], [1.5]), ["input_spec[0].shape[0]", "1.5"]),
    "bool_dim": (_set(["input_spec", 0, "shape"], [True]), ["input_spec[0].shape[0]", "a bool"]),
    "empty_symbol": (_set(["input_spec", 0, "shape"], [""]), ["input_spec[0].shape[0]", "symbol"]),
    "shape_not_list": (_set(["input_spec", 0, "shape"], "n"), ["input_spec[0].shape", "expected a list"]),
    "extra_top_level_field": (_set(["weights_url"], "http://x"), ["weights_url", "unknown field"]),
    "extra_spec_field": (_set(["input_spec", 0, "device"], "CPU"), ["input_spec[0].device", "unknown field"]),
    "duplicate_tensor_name": (_set(["input_spec", 1, "name"], "x"), ["input_spec[1].name", "duplicate", "'x'"]),
    "device_for_unknown_input": (_set(["input_tensor_device", "z"], "CPU"), ["input_tensor_device.z", "not an input"]),
    "bad_device": (_set(["input_tensor_device", "x"], "TPU"), ["input_tensor_device.x", "TPU"]),
    "custom_ops_not_list": (_set(["custom_ops"], "ops.so"), ["custom_ops", "expected a list, got a string"]),
    "spec_entry_not_object": (_set(["output_spec", 0], "out"), ["output_spec[0]", "object"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_errors(case, base_config, package_with_config):
    change, expected = CONFIG_CASES[case]
    config = change if isinstance(change, str) else change(json.loads(json.dumps(base_config)))
    path = package_with_config(config)
    with pytest.raises(neuropods_native.ConfigError) as info:
        load(path)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "config.json" in message
    for part in expected:
        assert part in message, message
    # check_config (what the packagers use) agrees with the loader.
    text = config if isinstance(config, str) else json.dumps(config)
    with pytest.raises(neuropods_native.ConfigError) as again:
        neuropods_native.check_config(text)
    assert str(again.value) == message


def test_valid_config_passes_check(base_config):
    neuropods_native.check_config(json.dumps(base_config))


def test_tensorflow_platform_without_a_tf_model_is_package_error(base_config, package_with_config):
    path = package_with_config(dict(base_config, platform="tensorflow"))
    with pytest.raises(neuropods_native.PackageError, match=r"0/data/savedmodel/ nor a readable 0/data/model\.pb"):
        load(path)


def test_python_platforms_need_their_entrypoint(base_config, package_with_config):
    # "pytorch" is the original's name for python code holding a PyTorch model.
    for platform in ["python", "pytorch"]:
        path = package_with_config(dict(base_config, platform=platform))
        with pytest.raises(neuropods_native.PackageError, match="entrypoint_package"):
            load(path)
        os.makedirs(os.path.join(path, "0"), exist_ok=True)
        with open(os.path.join(path, "0", "config.json"), "w") as f:
            f.write('{"entrypoint": "get_model"}')
        # A backend's config errors cross the backend ABI as config errors.
        with pytest.raises(neuropods_native.ConfigError, match="0/config.json: entrypoint_package: missing"):
            load(path)
        shutil.rmtree(path)


def test_config_json_unreadable_is_io_error(addition_package, tmp_path):
    path = copy_package(addition_package, str(tmp_path / "pkg"))
    os.remove(os.path.join(path, "config.json"))
    os.mkdir(os.path.join(path, "config.json"))  # a folder where a file should be
    with pytest.raises(neuropods_native.NeuropodIOError) as info:
        load(path)
    assert isinstance(info.value, OSError)
    assert "config.json" in str(info.value)


def test_write_manifest_of_missing_folder_is_io_error(tmp_path):
    with pytest.raises(neuropods_native.NeuropodIOError, match="missing_folder"):
        neuropods_native.write_manifest(str(tmp_path / "missing_folder"))


def test_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(neuropods_native.PackageError, match="no config.json"):
        load(str(tmp_path / "empty"))


def test_missing_model_file(addition_package, tmp_path):
    path = copy_package(addition_package, str(tmp_path / "pkg"))
    os.remove(os.path.join(path, "0", "data", "model.pt"))
    with pytest.raises(neuropods_native.PackageError, match="missing 0/data/model.pt") as info:
        load(path)
    assert path in str(info.value)


# Guards a bug this suite found (since fixed), as it was: package errors raised inside a backend
# are wrapped twice: the message reads 'invalid neuropod package P: invalid neuropod package P:
# missing 0/data/model.pt'. backend::plugin::report sends InvalidPackage's full Display text,
# and Collected::into_error wraps it in a new InvalidPackage.
def test_missing_model_file_message_is_not_doubled(addition_package, tmp_path):
    path = copy_package(addition_package, str(tmp_path / "pkg"))
    os.remove(os.path.join(path, "0", "data", "model.pt"))
    with pytest.raises(neuropods_native.PackageError) as info:
        load(path)
    assert str(info.value).count("invalid neuropod package") == 1, str(info.value)


def test_corrupt_model_file_is_backend_error(addition_package, tmp_path):
    path = copy_package(addition_package, str(tmp_path / "pkg"))
    with open(os.path.join(path, "0", "data", "model.pt"), "wb") as f:
        f.write(b"definitely not a torchscript archive")
    with pytest.raises(neuropods_native.BackendError, match="cannot load 0/data/model.pt") as info:
        load(path)
    assert isinstance(info.value, RuntimeError)
    assert str(info.value).startswith("torchscript backend:")


def test_symlink_out_of_package_folder_is_refused(addition_package, tmp_path):
    path = copy_package(addition_package, str(tmp_path / "pkg"))
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    os.symlink(outside, os.path.join(path, "0", "data", "leak"))
    with pytest.raises(neuropods_native.PackageError, match="symlink.*points outside"):
        load(path)


def test_symlink_inside_package_folder_is_fine(addition_package, tmp_path):
    path = copy_package(addition_package, str(tmp_path / "pkg"))
    os.symlink(os.path.join(path, "config.json"), os.path.join(path, "0", "config_link"))
    with load(path) as model:
        assert model.infer({"x": F32, "y": F32})["out"].tolist() == [0.0, 2.0, 4.0]


# ----------------------------------------------------------------- manifest


def test_verify_manifest_passes_on_intact_package(addition_package):
    with load(addition_package, verify_manifest=True) as model:
        assert model.infer({"x": F32, "y": F32})["out"].tolist() == [0.0, 2.0, 4.0]


def test_verify_manifest_detects_modified_model(addition_package, tmp_path):
    path = copy_package(addition_package, str(tmp_path / "pkg"))
    with open(os.path.join(path, "0", "data", "model.pt"), "ab") as f:
        f.write(b"\0")
    with pytest.raises(neuropods_native.PackageError) as info:
        load(path, verify_manifest=True)
    message = str(info.value)
    assert "0/data/model.pt" in message and "sha256" in message
    # Without verification the (still loadable) package loads.
    with load(path) as model:
        assert model.name == "addition_model"


def test_verify_manifest_detects_unlisted_file(addition_package, tmp_path):
    path = copy_package(addition_package, str(tmp_path / "pkg"))
    with open(os.path.join(path, "0", "data", "extra.bin"), "wb") as f:
        f.write(b"x")
    with pytest.raises(neuropods_native.PackageError, match="0/data/extra.bin is not in the manifest"):
        load(path, verify_manifest=True)


def test_verify_manifest_detects_missing_manifest(addition_package, tmp_path):
    path = copy_package(addition_package, str(tmp_path / "pkg"))
    os.remove(os.path.join(path, "manifest.json"))
    with pytest.raises(neuropods_native.PackageError, match="manifest.json"):
        load(path, verify_manifest=True)


MANIFEST_CASES = {
    # id: (change to manifest.json, "field: reason" the error names)
    "version_not_integer": (lambda m: {**m, "manifest_version": "1"},
                            "manifest_version: expected a non-negative integer, got a string"),
    "unknown_version": (lambda m: {**m, "manifest_version": 2},
                        "manifest_version: this Neuropods reads version 1, got 2"),
    "files_missing": (lambda m: {"manifest_version": 1}, "files: missing"),
    "files_not_object": (lambda m: {**m, "files": sorted(m["files"])}, "files: expected an object, got a list"),
    "digest_not_string": (lambda m: {**m, "files": {**m["files"], "config.json": 5}},
                          "files.config.json: expected a string, got a number"),
    "digest_not_sha256": (lambda m: {**m, "files": {**m["files"], "config.json": "abc"}},
                          "files.config.json: expected a sha256 digest (64 hex digits), got 'abc'"),
    "unknown_field": (lambda m: {**m, "signature": "x"},
                      "signature: unknown field (known: manifest_version, files)"),
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_manifest_with_wrong_fields_is_a_config_error(addition_package, tmp_path, case):
    change, expected = MANIFEST_CASES[case]
    path = copy_package(addition_package, str(tmp_path / "pkg"))
    manifest_path = os.path.join(path, "manifest.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    with open(manifest_path, "w") as f:
        json.dump(change(manifest), f)
    with pytest.raises(neuropods_native.ConfigError) as info:
        load(path, verify_manifest=True)
    assert isinstance(info.value, ValueError)
    assert f"invalid config manifest.json: {expected}" in str(info.value)
    # The manifest is read only to verify the package.
    with load(path) as model:
        assert model.name == "addition_model"


# ------------------------------------------------------------------ options


@pytest.mark.parametrize(
    "options, culprit",
    [
        ({"intra_op_threads": -1}, "intra_op_threads"),
        ({"inter_op_threads": 1.5}, "inter_op_threads"),
        ({"intra_op_threads": True}, "intra_op_threads"),
        ({"visible_gpu": "0"}, "visible_gpu"),
        ({"visible_gpu": -1}, "visible_gpu"),
    ],
)
def test_invalid_options(addition_package, options, culprit):
    with pytest.raises(neuropods_native.InvalidOptionError) as info:
        load(addition_package, **options)
    assert isinstance(info.value, ValueError)
    assert culprit in str(info.value)


TYPED_OPTION_CASES = [
    ({"threads": 2}, "'threads'"),
    ({"verify": True}, "'verify'"),
    ({"verify_manifest": "yes"}, "'verify_manifest'"),
    ({"use_ope": 1}, "'use_ope'"),
]


@pytest.mark.parametrize("entry", [load, neuropods_native.Neuropod, neuropods_native.serve])
@pytest.mark.parametrize("options, culprit", TYPED_OPTION_CASES)
def test_options_are_typed_keywords(addition_package, entry, options, culprit):
    # The options are the signature's own keyword arguments: a misspelt
    # one or a non-bool flag is Python's TypeError, before anything loads
    # (or serve binds a port).
    target = [addition_package] if entry is neuropods_native.serve else addition_package
    with pytest.raises(TypeError, match=culprit) as info:
        entry(target, **options)
    assert not isinstance(info.value, neuropods_native.NeuropodError), info.value


@pytest.mark.parametrize("entry", [load, neuropods_native.Neuropod])
def test_options_after_visible_gpu_are_keyword_only(addition_package, entry):
    with pytest.raises(TypeError, match="positional"):
        entry(addition_package, None, 2)


# ------------------------------------------------------------------- inputs


def test_unknown_input_name(addition_model):
    with pytest.raises(neuropods_native.UnknownTensorError) as info:
        addition_model.infer({"x": F32, "z": F32})
    assert isinstance(info.value, neuropods_native.SpecError) and isinstance(info.value, ValueError)
    assert "input 'z'" in str(info.value) and "x, y" in str(info.value)


def test_wrong_dtype(addition_model):
    with pytest.raises(neuropods_native.DTypeError) as info:
        addition_model.infer({"x": F32, "y": F32.astype(np.int32)})
    assert isinstance(info.value, neuropods_native.SpecError) and isinstance(info.value, ValueError)
    assert "input 'y'" in str(info.value) and "float32" in str(info.value) and "int32" in str(info.value)


def test_wrong_rank(addition_model):
    with pytest.raises(neuropods_native.ShapeError) as info:
        addition_model.infer({"x": F32.reshape(1, 3), "y": F32})
    assert isinstance(info.value, neuropods_native.SpecError) and isinstance(info.value, ValueError)
    assert "input 'x'" in str(info.value) and "rank 1" in str(info.value) and "rank 2" in str(info.value)


def test_symbol_mismatch(addition_model):
    with pytest.raises(neuropods_native.ShapeError) as info:
        addition_model.infer({"x": F32, "y": np.zeros(4, np.float32)})
    message = str(info.value)
    assert "input 'y'" in message and "'num_inputs'" in message and "3" in message and "4" in message
    assert "set by 'x'" in message


def test_fixed_dim_mismatch(mlp_package):
    with load(mlp_package) as model:
        with pytest.raises(neuropods_native.ShapeError) as info:
            model.infer({"x": np.zeros((2, 5), np.float32)})
    message = str(info.value)
    assert "input 'x'" in message and "dim 1" in message and "expected size 8" in message and "got 5" in message


@pytest.mark.parametrize(
    "inputs, culprit",
    [
        ([F32], "got list"),
        ((("x", F32),), "got tuple"),
        ({1: F32}, "got int"),
        ({b"x": F32}, "got bytes"),
        ({"x": [1.0, 2.0, 3.0]}, "'x': expected a numpy array, got list"),
        ({"x": 3.0}, "'x': expected a numpy array, got float"),
        ({"x": np.array([1, 2], dtype=object)}, "'x': object array element 0 is int"),
        ({"x": np.array(["a", None], dtype=object)}, "'x': object array element 1 is NoneType"),
        ({"x": np.zeros(3, np.complex64)}, "'x': numpy dtype complex64 is not supported"),
        ({"x": np.zeros(3, "datetime64[s]")}, "'x': numpy dtype"),
    ],
)
def test_input_type_errors(addition_model, inputs, culprit):
    with pytest.raises(neuropods_native.InputTypeError) as info:
        addition_model.infer(inputs)
    assert isinstance(info.value, TypeError)
    assert culprit in str(info.value)


def test_a_missing_required_input_is_invalid_input_naming_it(addition_model):
    # Checked against forward's schema before the call: the caller's mistake
    # (400 from a server), not libtorch's schema dump with C++ frames.
    with pytest.raises(neuropods_native.InvalidInputError) as info:
        addition_model.infer({"x": F32})
    assert str(info.value) == (
        "invalid input: missing input 'y': the model's forward requires it (its arguments: x, y)"
    )


# ------------------------------------------------------------------ running


@pytest.fixture(scope="module")
def raising_package(make_package):
    return make_package("raising", M.RaisingModel(), [spec("x", "float32", (None,))], [spec("y", "float32", (None,))])


def test_model_raising_inside_forward(raising_package):
    with load(raising_package) as model:
        np.testing.assert_array_equal(model.infer({"x": F32})["y"], F32 * 2)
        with pytest.raises(neuropods_native.BackendError) as info:
            model.infer({"x": np.full(3, 50.0, np.float32)})
        assert isinstance(info.value, RuntimeError)
        assert "input sum exceeds the limit of 100" in str(info.value)
        assert str(info.value).startswith("torchscript backend:")
        # The model still works after a failed call.
        np.testing.assert_array_equal(model.infer({"x": F32})["y"], F32 * 2)


def test_output_dtype_differs_from_spec(make_package):
    path = make_package("wrong_out_dtype", M.WrongOutputDTypeModel(), [spec("x", "float32", (None,))], [spec("y", "float32", (None,))])
    with load(path) as model:
        with pytest.raises(neuropods_native.DTypeError) as info:
            model.infer({"x": F32})
    message = str(info.value)
    assert "output 'y'" in message and "float32" in message and "float64" in message


def test_output_not_in_spec(make_package):
    path = make_package("extra_out", M.ExtraOutputModel(), [spec("x", "float32", (None,))], [spec("y", "float32", (None,))])
    with load(path) as model:
        with pytest.raises(neuropods_native.UnknownTensorError, match="output 'surprise' is not in the spec"):
            model.infer({"x": F32})


def test_output_breaks_symbol_bound_by_input(make_package):
    path = make_package("growing", M.GrowingOutputModel(), [spec("x", "float32", ("n",))], [spec("y", "float32", ("n",))])
    with load(path) as model:
        with pytest.raises(neuropods_native.ShapeError) as info:
            model.infer({"x": F32})
    message = str(info.value)
    assert "output 'y'" in message and "'n' = 3" in message and "got 6" in message


def test_unsupported_output_dtype(make_package):
    path = make_package("complex_out", M.ComplexOutputModel(), [spec("x", "float32", (None,))], [spec("y", "float32", (None,))])
    with load(path) as model:
        with pytest.raises(neuropods_native.BackendError, match="output 'y' has unsupported torch dtype"):
            model.infer({"x": F32})


def test_non_tensor_output(make_package):
    path = make_package("int_list_out", M.IntListOutputModel(), [spec("x", "float32", (None,))], [spec("y", "int64", (None,))])
    with load(path) as model:
        with pytest.raises(neuropods_native.BackendError, match="output 'y' is a list of Int"):
            model.infer({"x": F32})


def test_infer_after_close(addition_package):
    model = load(addition_package)
    model.close()
    for action in (lambda: model.infer({"x": F32, "y": F32}), lambda: model.name, lambda: model.platform, lambda: model.inputs, lambda: model.outputs):
        with pytest.raises(neuropods_native.ModelClosedError, match="closed") as info:
            action()
        assert isinstance(info.value, RuntimeError)


def test_rust_panic_becomes_internal_error():
    with pytest.raises(neuropods_native.InternalError) as info:
        neuropods_native._native._panic_for_tests()
    assert isinstance(info.value, RuntimeError)
    assert "deliberate panic for tests" in str(info.value)
    # The interpreter and the module keep working.
    assert neuropods_native.deserialize(neuropods_native.serialize(F32)).tolist() == [0.0, 1.0, 2.0]


# --------------------------------------------------------------- custom ops


@pytest.fixture
def bogus_custom_op_package(make_package, tmp_path):
    op = tmp_path / "libbogus_ops.so"
    op.write_text("this is a text file, not a shared library\n" * 4)
    return make_package(
        "custom_op",
        M.AdditionModel(),
        [spec("x", "float32", ("n",)), spec("y", "float32", ("n",))],
        [spec("out", "float32", ("n",))],
        custom_ops=[str(op)],
    )


def test_custom_op_is_copied_and_listed(bogus_custom_op_package):
    assert os.path.isfile(os.path.join(bogus_custom_op_package, "0", "ops", "libbogus_ops.so"))
    with open(os.path.join(bogus_custom_op_package, "config.json")) as f:
        assert json.load(f)["custom_ops"] == ["libbogus_ops.so"]


def test_unloadable_custom_op_is_package_error(bogus_custom_op_package):
    with pytest.raises(neuropods_native.PackageError, match="custom op libbogus_ops.so"):
        load(bogus_custom_op_package)


# Guards a bug this suite found (since fixed), as it was: the dynamic loader's reason is lost:
# the message ends in 'dlopen failed' only. libloading 0.9's Display for DlOpen prints just
# 'dlopen failed' (dlerror's text is in its source()); load_custom_ops in crates/neuropods-
# torchscript/src/lib.rs (and registry::open for FrameworkNotFound's 'detail') use
# e.to_string().
def test_unloadable_custom_op_says_why(bogus_custom_op_package):
    with pytest.raises(neuropods_native.PackageError) as info:
        load(bogus_custom_op_package)
    message = str(info.value)
    # dlerror() says e.g. ".../libbogus_ops.so: invalid ELF header".
    assert "invalid ELF header" in message or "file too short" in message, message
