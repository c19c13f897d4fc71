"""The bad-input matrix: one table of bad inputs across the public API
(infer, load options, config.json, packages on disk, zip packages,
manifests, serialize/deserialize, packagers), each with the exact exception
class it must raise and fragments of the message that name the culprit.

Every case runs against a fresh copy of a real TorchScript package, and the
process must survive every one of them (a crash would end the test run).
Manifest verification is off by default (hashing every weight file on each
load is slow, and a local package is as trusted as the code that loads it);
the manifest cases turn it on."""

import json
import os
import struct
import zipfile
from typing import Callable, List, NamedTuple, Type

import numpy as np
import pytest

import neuropods_native as N
from helpers import copy_package, load, script
from neuropods.packagers import create_python_neuropod, create_torchscript_neuropod

F32 = np.arange(3, dtype=np.float32)


class Case(NamedTuple):
    run: Callable[["Context"], object]
    error: Type[BaseException]
    fragments: List[str]


class Context:
    """What a case may use: a loaded model, and a way to get a private copy
    of the package with one thing changed."""

    def __init__(self, model, package, tmp_path):
        self.model = model
        self.package = package
        self.tmp = tmp_path

    def infer(self, inputs):
        return self.model.infer(inputs)

    def copy(self) -> str:
        return copy_package(self.package, str(self.tmp / "pkg"))

    def with_config(self, change: Callable[[dict], object]) -> str:
        path = self.copy()
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
        change(config)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(config, f)
        return path

    def with_config_text(self, text: str) -> str:
        path = self.copy()
        with open(os.path.join(path, "config.json"), "w") as f:
            f.write(text)
        return path

    def zip_with(self, name: str, data: bytes = b"x", compress=zipfile.ZIP_STORED) -> str:
        """A zip of the package with one extra entry called `name`."""
        path = str(self.tmp / "pkg.zip")
        with zipfile.ZipFile(path, "w", compress) as z:
            for root, _, files in os.walk(self.package):
                for file in files:
                    full = os.path.join(root, file)
                    z.write(full, os.path.relpath(full, self.package))
            z.writestr(name, data)
        return path


def edit(config: dict, path: list, value=None, delete=False) -> None:
    for key in path[:-1]:
        config = config[key]
    if delete:
        del config[path[-1]]
    else:
        config[path[-1]] = value


def config_case(path, value=None, delete=False):
    return lambda c: load(c.with_config(lambda config: edit(config, path, value, delete)))


def blob(array=F32) -> bytes:
    return N.serialize(array)


def absurd_dims(dims=(1 << 40, 1 << 40), dtype_code=2) -> bytes:
    """A valid header and an entry of dtype `dtype_code` (float32 unless
    said) claiming `dims`, with a payload length of 2^62."""
    b = bytearray(blob())
    dtype_at = 16 + 4 + 0  # header, name length, (empty) name
    struct.pack_into("<II", b, dtype_at, dtype_code, len(dims))
    dims_at = dtype_at + 8
    return bytes(b[:dims_at]) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<Q", 1 << 62)


def zip_bomb(c: Context) -> str:
    """A tiny archive whose one entry inflates to 200 MB of zeros."""
    path = str(c.tmp / "bomb.zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", b"{}")
        with z.open("0/data/model.pt", "w", force_zip64=True) as entry:
            chunk = bytes(1 << 20)
            for _ in range(200):
                entry.write(chunk)
    assert os.path.getsize(path) < 1 << 20
    return path


def symlink_out(c: Context) -> str:
    path = c.copy()
    outside = c.tmp / "outside.txt"
    outside.write_text("secret")
    os.symlink(outside, os.path.join(path, "0", "data", "leak.txt"))
    return path


def fifo_inside(c: Context) -> str:
    """A package holding a named pipe, listed in its manifest: reading it
    would wait forever for a writer."""
    path = with_manifest(c, lambda m: {**m, "files": {**m["files"], "0/data/pipe": "0" * 64}})
    os.mkfifo(os.path.join(path, "0", "data", "pipe"))
    return path


def tamper(c: Context) -> str:
    path = c.copy()
    with open(os.path.join(path, "0", "data", "model.pt"), "ab") as f:
        f.write(b"tampered")
    return path


def create(c: Context, **overrides):
    import torch

    class Add(torch.nn.Module):
        def forward(self, x, y):
            return {"out": x + y}

    kwargs = dict(
        neuropod_path=str(c.tmp / "new"), model_name="add", module=script(Add()), package_as_zip=False,
        input_spec=[{"name": "x", "dtype": "float32", "shape": (None,)},
                    {"name": "y", "dtype": "float32", "shape": (None,)}],
        output_spec=[{"name": "out", "dtype": "float32", "shape": (None,)}],
    )
    kwargs.update(overrides)
    return create_torchscript_neuropod(**kwargs)


def create_python(c: Context, requirements: str, load_it: bool = False):
    """A python package of the identity model with these requirements."""
    code = c.tmp / "src" / "identity"
    code.mkdir(parents=True)
    (code / "__init__.py").write_text("def get_model(data_root):\n    return lambda x: {'x': x}\n")
    spec = [{"name": "x", "dtype": "float32", "shape": (None,)}]
    create_python_neuropod(
        str(c.tmp / "py"), "identity", data_paths=[], code_path_spec=[{"python_root": str(code.parent)}],
        entrypoint_package="identity", entrypoint="get_model", input_spec=spec, output_spec=spec,
        requirements=requirements, package_as_zip=False,
    )
    return load(str(c.tmp / "py")) if load_it else None


def with_backend_config(path: str, change: Callable[[dict], object]) -> str:
    """`path` with its 0/config.json changed."""
    backend_config = os.path.join(path, "0", "config.json")
    with open(backend_config) as f:
        config = json.load(f)
    with open(backend_config, "w") as f:
        json.dump(change(config), f)
    return path


def tf_graph_package(c: Context, change: Callable[[dict], object]):
    """Loads a TF frozen-graph package (x + y) whose 0/config.json is changed."""
    import tensorflow as tf
    from neuropods.packagers import create_tensorflow_neuropod

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        y = tf.compat.v1.placeholder(tf.float32, [None], name="y")
        tf.add(x, y, name="out")
    spec = [{"name": n, "dtype": "float32", "shape": (None,)} for n in ("x", "y")]
    create_tensorflow_neuropod(
        neuropod_path=str(c.tmp / "tf"), model_name="add", graph_def=g.as_graph_def(),
        node_name_mapping={"x": "x:0", "y": "y:0", "out": "out:0"},
        input_spec=spec, output_spec=[{"name": "out", "dtype": "float32", "shape": (None,)}],
        package_as_zip=False,
    )
    return load(with_backend_config(str(c.tmp / "tf"), change))


def python_package(c: Context, change: Callable[[dict], object]):
    """Loads the python identity package with its 0/config.json changed."""
    create_python(c, "numpy\n")
    return load(with_backend_config(str(c.tmp / "py"), change))


def with_manifest(c: Context, change: Callable[[dict], object]) -> str:
    path = c.copy()
    with open(os.path.join(path, "manifest.json")) as f:
        manifest = json.load(f)
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(change(manifest), f)
    return path


CASES = {
    # ---- infer: inputs
    "wrong_dtype": Case(lambda c: c.infer({"x": F32, "y": F32.astype(np.float64)}),
                        N.DTypeError, ["input 'y'", "float32", "float64"]),
    "wrong_rank": Case(lambda c: c.infer({"x": F32.reshape(3, 1), "y": F32}),
                       N.ShapeError, ["input 'x'", "rank 1", "rank 2"]),
    "symbol_mismatch": Case(lambda c: c.infer({"x": F32, "y": np.zeros(5, np.float32)}),
                            N.ShapeError, ["input 'y'", "'num_inputs'", "5", "set by 'x'"]),
    "unknown_name": Case(lambda c: c.infer({"x": F32, "y": F32, "z": F32}),
                         N.UnknownTensorError, ["input 'z'", "x, y"]),
    "non_dict_inputs": Case(lambda c: c.infer([F32, F32]), N.InputTypeError, ["got list"]),
    "none_inputs": Case(lambda c: c.infer(None), N.InputTypeError, ["got NoneType"]),
    "non_str_key": Case(lambda c: c.infer({0: F32}), N.InputTypeError, ["got int"]),
    "bytes_key": Case(lambda c: c.infer({b"x": F32}), N.InputTypeError, ["got bytes"]),
    "list_value": Case(lambda c: c.infer({"x": [1.0], "y": F32}), N.InputTypeError,
                       ["'x'", "expected a numpy array, got list"]),
    "scalar_value": Case(lambda c: c.infer({"x": 1.0, "y": F32}), N.InputTypeError,
                         ["'x'", "expected a numpy array, got float"]),
    "object_array_of_ints": Case(lambda c: c.infer({"x": np.array([1, 2], dtype=object), "y": F32}),
                                 N.InputTypeError, ["'x'", "object array element 0 is int"]),
    "lone_surrogate_in_unicode_array": Case(lambda c: c.infer({"x": np.array(["a\ud800"]), "y": F32}),
                                            N.InputTypeError, ["'x'", "element 0", "UTF-8"]),
    "lone_surrogate_in_object_array": Case(lambda c: c.infer({"x": np.array(["a", "b\udfff"], dtype=object),
                                                              "y": F32}),
                                           N.InputTypeError, ["'x'", "element 1 is a str", "UTF-8"]),
    "lone_surrogate_in_input_name": Case(lambda c: c.infer({"x\ud800": F32}), N.InputTypeError,
                                         ["tensor name", "x\\ud800", "UTF-8"]),
    "object_array_with_none": Case(lambda c: c.infer({"x": np.array(["a", None], dtype=object), "y": F32}),
                                   N.InputTypeError, ["'x'", "element 1 is NoneType"]),
    "complex_dtype": Case(lambda c: c.infer({"x": np.zeros(3, np.complex64), "y": F32}),
                          N.InputTypeError, ["'x'", "complex64", "not supported"]),
    "string_for_float": Case(lambda c: c.infer({"x": np.array(["a", "b", "c"]), "y": F32}),
                             N.DTypeError, ["input 'x'", "float32", "string"]),
    # ---- load options
    "unknown_option": Case(lambda c: load(c.package, warp_speed=True), TypeError, ["warp_speed"]),
    "zero_intra_op_threads": Case(lambda c: load(c.package, intra_op_threads=0), N.InvalidOptionError,
                                  ["intra_op_threads", "at least 1"]),
    "negative_gpu": Case(lambda c: load(c.package, visible_gpu=-1), N.InvalidOptionError, ["visible_gpu"]),
    "string_gpu": Case(lambda c: load(c.package, visible_gpu="0"), N.InvalidOptionError, ["visible_gpu"]),
    # ---- config.json
    "invalid_json": Case(lambda c: load(c.with_config_text('{"name": ')), N.ConfigError,
                         ["config.json", "not valid JSON"]),
    "config_not_object": Case(lambda c: load(c.with_config_text("[]")), N.ConfigError,
                              ["config.json", "expected a JSON object"]),
    "missing_name": Case(config_case(["name"], delete=True), N.ConfigError, ["config.json", "name: missing"]),
    "missing_input_spec": Case(config_case(["input_spec"], delete=True), N.ConfigError,
                               ["input_spec: missing"]),
    "extra_field": Case(config_case(["weights_url"], "http://x"), N.ConfigError,
                        ["weights_url", "unknown field"]),
    "name_not_string": Case(config_case(["name"], 7), N.ConfigError, ["name", "expected a string"]),
    "empty_name": Case(config_case(["name"], ""), N.ConfigError, ["name", "must not be empty"]),
    "empty_tensor_name": Case(config_case(["input_spec", 0, "name"], ""), N.ConfigError,
                              ["input_spec[0].name", "empty"]),
    "unknown_platform": Case(config_case(["platform"], "caffe2"), N.ConfigError, ["platform", "caffe2"]),
    "unknown_dtype": Case(config_case(["input_spec", 0, "dtype"], "float31"), N.ConfigError,
                          ["input_spec[0].dtype", "float31"]),
    "zero_dim": Case(config_case(["input_spec", 0, "shape"], [0]), N.ConfigError,
                     ["input_spec[0].shape[0]", "positive integer"]),
    "negative_dim": Case(config_case(["output_spec", 0, "shape"], [-3]), N.ConfigError,
                         ["output_spec[0].shape[0]", "-3"]),
    "duplicate_spec_name": Case(config_case(["input_spec", 1, "name"], "x"), N.ConfigError,
                                ["input_spec[1].name", "duplicate", "'x'"]),
    "bad_device": Case(config_case(["input_tensor_device", "x"], "TPU"), N.ConfigError,
                       ["input_tensor_device.x", "TPU"]),
    # ---- a backend's 0/config.json
    "tf_signature_name_not_string": Case(lambda c: tf_graph_package(c, lambda b: {**b, "signature_name": 3}),
                                         N.ConfigError, ["0/config.json", "signature_name", "expected a string"]),
    "tf_init_op_name_not_string": Case(lambda c: tf_graph_package(c, lambda b: {**b, "init_op_names": [1]}),
                                       N.ConfigError, ["0/config.json", "init_op_names[0]", "got a number"]),
    "tf_unknown_field": Case(lambda c: tf_graph_package(c, lambda b: {**b, "inputs": ["x"]}), N.ConfigError,
                             ["0/config.json", "inputs", "unknown field", "node_name_mapping"]),
    "tf_node_name_mapping_not_object": Case(lambda c: tf_graph_package(c, lambda b: {**b, "node_name_mapping": "x"}),
                                            N.ConfigError, ["0/config.json", "node_name_mapping",
                                                            "expected an object, got a string"]),
    "python_entrypoint_not_string": Case(lambda c: python_package(c, lambda b: {**b, "entrypoint": 5}),
                                         N.ConfigError, ["0/config.json", "entrypoint", "expected a string"]),
    "python_entrypoint_missing": Case(lambda c: python_package(c, lambda b: {"entrypoint_package": "identity"}),
                                      N.ConfigError, ["0/config.json", "entrypoint: missing"]),
    # ---- packages on disk
    "missing_package": Case(lambda c: load(str(c.tmp / "nowhere")), N.PackageNotFoundError, ["nowhere"]),
    "missing_config": Case(lambda c: (os.remove(os.path.join(p := c.copy(), "config.json")), load(p)),
                           N.PackageError, ["no config.json"]),
    "missing_model_file": Case(lambda c: (os.remove(os.path.join(p := c.copy(), "0", "data", "model.pt")),
                                          load(p)), N.PackageError, ["model.pt"]),
    "symlink_out_of_package": Case(lambda c: load(symlink_out(c)), N.PackageError, ["leak.txt", "outside"]),
    "fifo_in_package": Case(lambda c: load(fifo_inside(c), verify_manifest=True), N.PackageError,
                            ["0/data/pipe", "FIFO", "only files and folders"]),
    "fifo_as_package": Case(lambda c: (os.mkfifo(p := str(c.tmp / "pipe.zip")), load(p)), N.PackageError,
                            ["pipe.zip", "FIFO", "neither a folder nor a zip file"]),
    "manifest_hash_mismatch": Case(lambda c: load(tamper(c), verify_manifest=True), N.PackageError,
                                   ["manifest", "model.pt"]),
    "manifest_version_not_integer": Case(lambda c: load(with_manifest(c, lambda m: {**m, "manifest_version": "1"}),
                                                        verify_manifest=True),
                                         N.ConfigError, ["manifest.json", "manifest_version", "got a string"]),
    "manifest_files_not_object": Case(lambda c: load(with_manifest(c, lambda m: {**m, "files": []}),
                                                     verify_manifest=True),
                                      N.ConfigError, ["manifest.json", "files", "expected an object, got a list"]),
    # ---- zip packages
    "zip_dotdot_entry": Case(lambda c: load(c.zip_with("../escaped.txt")), N.PackageError,
                             ["../escaped.txt", "escapes the package folder"]),
    "zip_absolute_entry": Case(lambda c: load(c.zip_with(str(c.tmp / "absolute.txt"))), N.PackageError,
                               ["absolute.txt", "escapes the package folder"]),
    "zip_bomb": Case(lambda c: load(zip_bomb(c)), N.PackageError, ["0/data/model.pt", "zip bomb"]),
    "not_a_zip": Case(lambda c: (c.tmp.joinpath("fake.zip").write_bytes(b"PK not really"),
                                 load(str(c.tmp / "fake.zip"))), N.PackageError, ["fake.zip"]),
    # ---- serialize / deserialize
    "deserialize_truncated": Case(lambda c: N.deserialize(blob()[:-3]), N.SerializationError, ["payload"]),
    "deserialize_bad_magic": Case(lambda c: N.deserialize(b"NOTAPOD!" + blob()[8:]), N.SerializationError,
                                  ["magic"]),
    "deserialize_bad_version": Case(lambda c: N.deserialize(blob()[:8] + b"\x09\x00" + blob()[10:]),
                                    N.SerializationError, ["version", "9"]),
    "deserialize_bad_dtype": Case(lambda c: N.deserialize(blob()[:20] + b"\x63\x00\x00\x00" + blob()[24:]),
                                  N.SerializationError, ["dtype", "99"]),
    "deserialize_absurd_size": Case(lambda c: N.deserialize(absurd_dims()), N.SerializationError,
                                    ["shape [1099511627776, 1099511627776]", "too large to describe memory"]),
    "deserialize_zero_and_huge_dim": Case(lambda c: N.deserialize(absurd_dims((0, 1 << 63))),
                                          N.SerializationError, ["[0, 9223372036854775808]", "too large"]),
    "deserialize_rank_65": Case(lambda c: N.deserialize(absurd_dims((1,) * 65, dtype_code=13)),
                                N.SerializationError, ["rank 65", "64 dimensions"]),
    "serialize_lone_surrogate": Case(lambda c: N.serialize(np.array(["ok", "\ud800"])), N.InputTypeError,
                                     ["element 1", "UTF-8"]),
    "serialize_lone_surrogate_key": Case(lambda c: N.serialize({"\ud800": F32}), N.InputTypeError,
                                         ["tensor name", "\\ud800", "UTF-8"]),
    "deserialize_empty": Case(lambda c: N.deserialize(b""), N.SerializationError, ["0 bytes", "header"]),
    "deserialize_not_bytes": Case(lambda c: N.deserialize(12), N.InputTypeError, ["bytes-like", "int"]),
    "serialize_list": Case(lambda c: N.serialize([1, 2]), N.InputTypeError, ["list"]),
    "serialize_non_str_key": Case(lambda c: N.serialize({1: F32}), N.InputTypeError, ["keys must be str", "int"]),
    # ---- packagers
    "packager_bad_dtype": Case(lambda c: create(c, input_spec=[{"name": "x", "dtype": "float31", "shape": (1,)}]),
                               ValueError, ["input_spec[0]", "'x'", "float31"]),
    "packager_bad_requirement": Case(lambda c: create_python(c, "numpy\nnumpy>=>1\n"), N.ConfigError,
                                     ["0/requirements.lock", "line 2", "'numpy>=>1'"]),
    "unmet_requirement": Case(lambda c: create_python(c, "numpy<1\nnumpy\n", load_it=True), N.RequirementsError,
                              ["numpy<1 (installed: " + np.__version__ + ")"]),
    "packager_existing_path": Case(lambda c: create(c, neuropod_path=c.package), FileExistsError,
                                   ["already exists"]),
}


@pytest.fixture(scope="module")
def model(addition_package):
    with load(addition_package) as m:
        yield m


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, model, addition_package, tmp_path, monkeypatch):
    case = CASES[name]
    # Zip packages are extracted under the temp dir: make it a private one,
    # to see that nothing is left there (or written beside it) on failure.
    private_tmp = tmp_path / "private-tmp"
    private_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    with pytest.raises(BaseException) as info:
        case.run(Context(model, addition_package, tmp_path))
    assert type(info.value) is case.error, f"{name}: {type(info.value).__name__}: {info.value}"
    message = str(info.value)
    for fragment in case.fragments:
        assert fragment in message, f"{name}: {fragment!r} not in {message!r}"
    assert os.listdir(private_tmp) == [], f"{name}: left {os.listdir(private_tmp)} in the temp dir"
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "absolute.txt").exists()


def test_matrix_is_large_enough():
    assert len(CASES) >= 40


def test_model_still_works_after_the_matrix(model):
    np.testing.assert_array_equal(model.infer({"x": F32, "y": F32})["out"], F32 * 2)
