"""TensorFlow models made by TF in fixtures, packaged with
create_tensorflow_neuropod and run through the same API as TorchScript."""

import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

import neuropods_native
from neuropods.loader import load_neuropod
from neuropods.packagers import create_keras_neuropod, create_tensorflow_neuropod
from helpers import STRING_KIND, assert_backend_config_error, spec

ADD_SPEC_IN = [
    {"name": "x", "dtype": "float32", "shape": ("n",)},
    {"name": "y", "dtype": "float32", "shape": ("n",)},
]
ADD_SPEC_OUT = [{"name": "out", "dtype": "float32", "shape": ("n",)}]
ADD_MAPPING = {"x": "some_namespace/in_x:0", "y": "some_namespace/in_y:0", "out": "some_namespace/out:0"}


def addition_graph_def():
    g = tf.Graph()
    with g.as_default():
        with tf.compat.v1.name_scope("some_namespace"):
            x = tf.compat.v1.placeholder(tf.float32, [None], name="in_x")
            y = tf.compat.v1.placeholder(tf.float32, [None], name="in_y")
            tf.add(x, y, name="out")
        tf.no_op(name="init")
    return g.as_graph_def()


class Scaler(tf.Module):
    """Variables, a string input, outputs of two dtypes."""

    def __init__(self):
        self.w = tf.Variable([1.5, -2.0, 4.0])

    @tf.function(input_signature=[tf.TensorSpec([3], tf.float32), tf.TensorSpec([None], tf.string)])
    def __call__(self, a, s):
        return {"scaled": a * self.w, "lengths": tf.strings.length(s)}


SCALER_IN = [{"name": "a", "dtype": "float32", "shape": (3,)}, {"name": "s", "dtype": "string", "shape": (None,)}]
SCALER_OUT = [{"name": "scaled", "dtype": "float32", "shape": (3,)}, {"name": "lengths", "dtype": "int32", "shape": (None,)}]


@pytest.fixture(scope="module")
def frozen_graph_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tf") / "frozen.pb"
    path.write_bytes(addition_graph_def().SerializeToString())
    return str(path)


@pytest.mark.parametrize("as_zip", [False, True])
def test_frozen_graph_file(tmp_path, frozen_graph_file, as_zip):
    x = np.arange(5, dtype=np.float32)
    path = tmp_path / ("add.zip" if as_zip else "add")
    create_tensorflow_neuropod(
        neuropod_path=path, model_name="addition", input_spec=ADD_SPEC_IN, output_spec=ADD_SPEC_OUT,
        node_name_mapping=ADD_MAPPING, frozen_graph_path=frozen_graph_file, package_as_zip=as_zip,
        test_input_data={"x": x, "y": x * 3}, test_expected_out={"out": x * 4},
    )
    with load_neuropod(path) as model:
        assert model.platform == "tensorflow"
        out = model.infer({"x": x, "y": np.ones(5, np.float32)})["out"]
    np.testing.assert_array_equal(out, x + 1)


def test_graph_def_and_spec_violation(tmp_path):
    path = tmp_path / "add"
    create_tensorflow_neuropod(
        neuropod_path=path, model_name="addition", input_spec=ADD_SPEC_IN, output_spec=ADD_SPEC_OUT,
        node_name_mapping=ADD_MAPPING, graph_def=addition_graph_def(),
    )
    with load_neuropod(path) as model:
        with pytest.raises(neuropods_native.ShapeError, match="symbol 'n' = 2"):
            model.infer({"x": np.ones(2, np.float32), "y": np.ones(3, np.float32)})
        with pytest.raises(neuropods_native.DTypeError, match="input 'x': expected dtype float32, got float64"):
            model.infer({"x": np.ones(2), "y": np.ones(2, np.float32)})


def test_saved_model_with_variables_strings_and_two_dtypes(tmp_path):
    module = Scaler()
    a = np.array([2, 2, 0.5], np.float32)
    s = np.array(["ab", "", "héllo"])
    expected = module(tf.constant(a), tf.constant(s))
    path = tmp_path / "scaler"
    create_tensorflow_neuropod(
        neuropod_path=path, model_name="scaler", input_spec=SCALER_IN, output_spec=SCALER_OUT,
        trackable_obj=module, test_input_data={"a": a, "s": s},
        test_expected_out={k: v.numpy() for k, v in expected.items()},
    )
    with load_neuropod(path, intra_op_threads=1, inter_op_threads=1) as model:
        out = model.infer({"a": a, "s": np.array([v.encode() for v in s])})
    np.testing.assert_array_equal(out["scaled"], expected["scaled"].numpy())
    assert out["lengths"].dtype == np.int32
    np.testing.assert_array_equal(out["lengths"], expected["lengths"].numpy())


def test_saved_model_dir_and_unknown_signature_key(tmp_path):
    module = Scaler()
    saved = tmp_path / "exported"
    tf.saved_model.save(module, str(saved), signatures=module.__call__)
    create_tensorflow_neuropod(
        neuropod_path=tmp_path / "ok", model_name="scaler", input_spec=SCALER_IN,
        output_spec=SCALER_OUT, saved_model_dir=str(saved),
    )
    with load_neuropod(tmp_path / "ok") as model:
        out = model.infer({"a": np.ones(3, np.float32), "s": np.array(["abc"])})
    np.testing.assert_array_equal(out["scaled"], [1.5, -2.0, 4.0])
    np.testing.assert_array_equal(out["lengths"], [3])
    bad_out = [{"name": "nope", "dtype": "float32", "shape": (3,)}]
    create_tensorflow_neuropod(
        neuropod_path=tmp_path / "bad", model_name="scaler", input_spec=SCALER_IN,
        output_spec=bad_out, saved_model_dir=str(saved),
    )
    with pytest.raises(neuropods_native.PackageError, match="output 'nope' is not in signature 'serving_default'"):
        load_neuropod(tmp_path / "bad")


def test_a_missing_input_is_invalid_input_naming_it(tmp_path):
    # A placeholder TF needs a value for, named before the run.
    path = tmp_path / "add"
    create_tensorflow_neuropod(
        neuropod_path=path, model_name="add", input_spec=ADD_SPEC_IN, output_spec=ADD_SPEC_OUT,
        node_name_mapping=ADD_MAPPING, graph_def=addition_graph_def(), package_as_zip=False,
    )
    with load_neuropod(path) as model:
        with pytest.raises(neuropods_native.InvalidInputError,
                           match=r"missing input 'y': the model's graph needs a value for it \(a placeholder\)"):
            model.infer({"x": np.ones(2, np.float32)})


@pytest.mark.parametrize("init_op_names, written", [("init", ["init"]), (None, []), (("init",), ["init"])])
def test_the_packager_takes_init_op_names_as_the_original_did(tmp_path, init_op_names, written):
    # One name as a string (the original's packager wrapped it), or None.
    path = tmp_path / "add"
    create_tensorflow_neuropod(
        neuropod_path=path, model_name="add", input_spec=ADD_SPEC_IN, output_spec=ADD_SPEC_OUT,
        node_name_mapping=ADD_MAPPING, graph_def=addition_graph_def(), init_op_names=init_op_names,
        package_as_zip=False,
    )
    with open(path / "0" / "config.json") as f:
        assert json.load(f)["init_op_names"] == written
    with load_neuropod(path) as model:
        np.testing.assert_array_equal(model.infer({"x": np.ones(2, np.float32), "y": np.ones(2, np.float32)})["out"], [2, 2])


def test_packager_refuses_ambiguous_sources(tmp_path, frozen_graph_file):
    common = dict(model_name="m", input_spec=ADD_SPEC_IN, output_spec=ADD_SPEC_OUT)
    with pytest.raises(ValueError, match="exactly one model source"):
        create_tensorflow_neuropod(tmp_path / "a", frozen_graph_path=frozen_graph_file,
                                   graph_def=addition_graph_def(), node_name_mapping=ADD_MAPPING, **common)
    with pytest.raises(ValueError, match="needs node_name_mapping"):
        create_tensorflow_neuropod(tmp_path / "b", frozen_graph_path=frozen_graph_file, **common)
    with pytest.raises(ValueError, match="node_name_mapping is for graphs only"):
        create_tensorflow_neuropod(tmp_path / "c", trackable_obj=Scaler(), node_name_mapping=ADD_MAPPING, **common)
    with pytest.raises(ValueError, match=r"no entry for \['out'\]"):
        create_tensorflow_neuropod(tmp_path / "d", graph_def=addition_graph_def(),
                                   node_name_mapping={"x": "some_namespace/in_x", "y": "some_namespace/in_y"}, **common)
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_keras_functional_model_matches_predict(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    features = keras.Input((3,), name="features")
    extra = keras.Input((2,), name="extra")
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([features, extra]))
    model = keras.Model(
        [features, extra],
        [keras.layers.Dense(2, name="logits")(hidden), keras.layers.Dense(1, name="score")(hidden)],
    )
    rng = np.random.default_rng(0)
    inputs = {"features": rng.normal(size=(4, 3)).astype(np.float32),
              "extra": rng.normal(size=(4, 2)).astype(np.float32)}
    logits, score = model.predict([inputs["features"], inputs["extra"]], verbose=0)
    path = tmp_path / "keras"
    create_keras_neuropod(path, "keras_model", model, test_input_data=inputs,
                          test_expected_out={"logits": logits, "score": score})
    with load_neuropod(path) as loaded:
        assert [s["name"] for s in loaded.inputs] == ["extra", "features"]
        assert loaded.outputs == [
            {"name": "logits", "dtype": "float32", "shape": ["batch_size", 2]},
            {"name": "score", "dtype": "float32", "shape": ["batch_size", 1]},
        ]
        out = loaded.infer(inputs)
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["score"], score, rtol=1e-5, atol=1e-6)


def test_keras_sequential_model(tmp_path):
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,), name="x"), keras.layers.Dense(2)])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    expected = model.predict(x, verbose=0)
    create_keras_neuropod(tmp_path / "seq", "seq", model)
    with load_neuropod(tmp_path / "seq") as loaded:
        (name,) = [s["name"] for s in loaded.outputs]
        np.testing.assert_allclose(loaded.infer({"x": x})[name], expected, rtol=1e-5, atol=1e-6)


def _two_in_two_out_keras_model():
    import keras

    keras.utils.set_random_seed(3)
    features = keras.Input((3,), name="features")
    extra = keras.Input((2,), name="extra")
    hidden = keras.layers.Dense(4, activation="relu")(keras.layers.Concatenate()([features, extra]))
    return keras.Model(
        [features, extra],
        [keras.layers.Dense(2, name="logits")(hidden), keras.layers.Dense(1, name="score")(hidden)],
    )


def test_keras_node_name_mapping_maps_spec_names_to_the_models(tmp_path):
    model = _two_in_two_out_keras_model()
    rng = np.random.default_rng(1)
    f, e = rng.normal(size=(3, 3)).astype(np.float32), rng.normal(size=(3, 2)).astype(np.float32)
    logits, score = model.predict([f, e], verbose=0)
    mapping = {"f": "features", "e": "extra", "l": "logits", "s": "score"}
    specs_in = [spec("f", "float32", ("batch", 3)), spec("e", "float32", ("batch", 2))]
    specs_out = [spec("l", "float32", ("batch", 2)), spec("s", "float32", ("batch", 1))]
    create_keras_neuropod(
        tmp_path / "mapped", "mapped", model, input_spec=specs_in, output_spec=specs_out,
        node_name_mapping=mapping, test_input_data={"f": f, "e": e}, test_expected_out={"l": logits, "s": score},
    )
    with load_neuropod(tmp_path / "mapped") as loaded:
        out = loaded.infer({"f": f, "e": e})
    np.testing.assert_allclose(out["l"], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["s"], score, rtol=1e-5, atol=1e-6)
    # Specs read from the model take the mapped names too.
    create_keras_neuropod(tmp_path / "auto", "auto", model, node_name_mapping={"s": "score"})
    with load_neuropod(tmp_path / "auto") as loaded:
        assert [o["name"] for o in loaded.outputs] == ["logits", "s"]
        np.testing.assert_allclose(loaded.infer({"features": f, "extra": e})["s"], score, rtol=1e-5, atol=1e-6)


def test_keras_takes_the_originals_sess_keyword_and_ignores_it(tmp_path):
    model = _two_in_two_out_keras_model()
    with pytest.warns(DeprecationWarning, match="sess is ignored"):
        create_keras_neuropod(tmp_path / "sess", "sess", model, sess=object())
    with load_neuropod(tmp_path / "sess") as loaded:
        assert [o["name"] for o in loaded.outputs] == ["logits", "score"]


@pytest.mark.parametrize("case", ["unknown output", "unknown input", "mapped to nothing", "stray mapping"])
def test_keras_specs_are_checked_when_packaging(tmp_path, case):
    model = _two_in_two_out_keras_model()
    specs_in = [spec("features", "float32", ("batch", 3)), spec("extra", "float32", ("batch", 2))]
    specs_out = [spec("logits", "float32", ("batch", 2)), spec("score", "float32", ("batch", 1))]
    mapping = None
    if case == "unknown output":
        specs_out[1] = spec("out", "float32", ("batch", 1))
        words = "output_spec 'out' is not an output of the Keras model; its outputs: logits, score; map spec names"
    elif case == "unknown input":
        specs_in[0] = spec("x", "float32", ("batch", 3))
        words = "input_spec 'x' is not an input of the Keras model; its inputs: extra, features"
    elif case == "mapped to nothing":
        mapping = {"score": "prob"}
        words = "output_spec 'score' (mapped to 'prob' by node_name_mapping) is not an output"
    else:
        mapping = {"nowhere": "score"}
        words = "node_name_mapping names ['nowhere'], which are in neither input_spec nor output_spec"
    path = tmp_path / "refused"
    with pytest.raises(ValueError) as e:
        create_keras_neuropod(path, "refused", model, input_spec=specs_in, output_spec=specs_out,
                              node_name_mapping=mapping)
    assert words in str(e.value)
    assert not path.exists()


def test_strings_bool_and_float16_through_a_frozen_graph(tmp_path):
    g = tf.Graph()
    with g.as_default():
        words = tf.compat.v1.placeholder(tf.string, [None], name="words")
        flags = tf.compat.v1.placeholder(tf.bool, [None], name="flags")
        halves = tf.compat.v1.placeholder(tf.float16, [None], name="halves")
        tf.strings.join([words, tf.constant("!")], name="shout")
        tf.logical_not(flags, name="negated")
        tf.multiply(halves, tf.constant(2, tf.float16), name="doubled")
    names = ["words", "flags", "halves", "shout", "negated", "doubled"]
    dtypes = ["string", "bool", "float16", "string", "bool", "float16"]
    specs = [{"name": n, "dtype": d, "shape": ("n",)} for n, d in zip(names, dtypes)]
    create_tensorflow_neuropod(
        neuropod_path=tmp_path / "types", model_name="types", input_spec=specs[:3], output_spec=specs[3:],
        node_name_mapping={n: f"{n}:0" for n in names}, graph_def=g.as_graph_def(),
    )
    with load_neuropod(tmp_path / "types") as model:
        out = model.infer({
            "words": np.array(["héllo", ""]),
            "flags": np.array([True, False]),
            "halves": np.array([1.5, -0.25], np.float16),
        })
    assert out["shout"].dtype.kind == STRING_KIND
    assert out["shout"].tolist() == ["héllo!", "!"]
    assert out["negated"].tolist() == [False, True]
    assert out["doubled"].dtype == np.float16 and out["doubled"].tolist() == [3.0, -0.5]


def test_many_inputs(tmp_path):
    count = 100
    g = tf.Graph()
    with g.as_default():
        inputs = [tf.compat.v1.placeholder(tf.float32, [2], name=f"in_{i}") for i in range(count)]
        tf.add_n(inputs, name="total")
    specs = [{"name": f"x{i}", "dtype": "float32", "shape": (2,)} for i in range(count)]
    mapping = {f"x{i}": f"in_{i}:0" for i in range(count)}
    mapping["total"] = "total:0"
    create_tensorflow_neuropod(
        neuropod_path=tmp_path / "many", model_name="many", input_spec=specs,
        output_spec=[{"name": "total", "dtype": "float32", "shape": (2,)}],
        node_name_mapping=mapping, graph_def=g.as_graph_def(),
    )
    feed = {f"x{i}": np.array([i, -2 * i], np.float32) for i in range(count)}
    with load_neuropod(tmp_path / "many") as model:
        total = model.infer(feed)["total"]
    np.testing.assert_array_equal(total, sum(feed.values()))


def test_running_a_torch_model_does_not_load_tensorflow(addition_package):
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from neuropods.loader import load_neuropod\n"
        f"m = load_neuropod({str(addition_package)!r})\n"
        "x = np.ones(3, np.float32)\n"
        "assert m.infer({'x': x, 'y': x})['out'].tolist() == [2, 2, 2]\n"
        "maps = open('/proc/self/maps').read()\n"
        "print('libtensorflow' in maps, 'libtorch_cpu' in maps)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


def test_keras_dict_inputs_and_outputs_keep_their_keys(tmp_path):
    import keras

    keras.utils.set_random_seed(2)
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b")
    hidden = keras.layers.Dense(4)(keras.layers.Concatenate()([a, b]))
    model = keras.Model(
        inputs={"a": a, "b": b},
        outputs={
            "prob": keras.layers.Dense(1, activation="sigmoid", name="p_layer")(hidden),
            "emb": keras.layers.Dense(2, name="e_layer")(hidden),
        },
    )
    rng = np.random.default_rng(2)
    inputs = {"a": rng.normal(size=(5, 3)).astype(np.float32), "b": rng.normal(size=(5, 2)).astype(np.float32)}
    expected = model.predict(inputs, verbose=0)
    create_keras_neuropod(tmp_path / "dict", "dict_model", model, test_input_data=inputs, test_expected_out=expected)
    with load_neuropod(tmp_path / "dict") as loaded:
        assert [s["name"] for s in loaded.outputs] == ["emb", "prob"]
        out = loaded.infer(inputs)
    assert sorted(out) == ["emb", "prob"]
    for key in expected:
        np.testing.assert_allclose(out[key], expected[key], rtol=1e-5, atol=1e-6)


def identity_package(path, outputs=("same", "double")):
    """x -> same (TF's Identity: the fed buffer itself) and double (2x)."""
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        tf.identity(x, name="same")
        tf.multiply(x, 2, name="double")
    create_tensorflow_neuropod(
        neuropod_path=path, model_name="identity",
        input_spec=[{"name": "x", "dtype": "float32", "shape": ("n",)}],
        output_spec=[{"name": name, "dtype": "float32", "shape": ("n",)} for name in outputs],
        node_name_mapping={"x": "x", "same": "same", "double": "double"}, graph_def=g.as_graph_def(),
    )
    return path


def aligned_array(n, dtype=np.float32, align=64):
    """A writable array whose data starts on an `align`-byte boundary."""
    raw = np.empty(n * np.dtype(dtype).itemsize + align, np.uint8)
    offset = -raw.ctypes.data % align
    return raw[offset:offset + n * np.dtype(dtype).itemsize].view(dtype)


@pytest.mark.parametrize("aligned", [True, False])
def test_an_output_that_is_the_fed_input_is_copied(tmp_path, aligned):
    # TF's Identity hands back the fed buffer itself; with aligned inputs
    # that buffer is the caller's array, lent only for the call.
    x = aligned_array(1000) if aligned else np.arange(1001, dtype=np.float32)[1:]
    x[:] = np.arange(1000)
    with load_neuropod(identity_package(tmp_path / "id")) as model:
        out = model.infer({"x": x})
    assert not np.shares_memory(out["same"], x)
    x[:] = -1
    np.testing.assert_array_equal(out["same"], np.arange(1000, dtype=np.float32))
    np.testing.assert_array_equal(out["double"], np.arange(1000, dtype=np.float32) * 2)


@pytest.mark.parametrize("offset", [0, 4])
def test_aligned_inputs_and_outputs_are_not_copied(tmp_path, offset):
    # Peak RSS of a fresh process: feeding a 128 MB input and receiving a
    # 128 MB output adds the output once (TF allocates it); a copy of either
    # on the way adds another 128 MB. TF copies inputs that are not 64-byte
    # aligned (offset 4) itself, which shows that the measure can tell.
    import subprocess
    import sys

    package = identity_package(tmp_path / "id", outputs=("double",))
    # VmHWM, not ru_maxrss: the latter carries the parent's peak over exec.
    code = f"""
import numpy as np
from neuropods.loader import load_neuropod
n = 32 * 1024 * 1024
raw = np.empty(n * 4 + 64, np.uint8)
offset = -raw.ctypes.data % 64 + {offset}
x = raw[offset:offset + n * 4].view(np.float32)
x[:] = 1.5
model = load_neuropod({str(package)!r})
model.infer({{"x": x[:16]}})
def peak_mb():
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024
before = peak_mb()
out = model.infer({{"x": x}})["double"]
assert out[0] == 3.0 and out[-1] == 3.0
print(peak_mb() - before)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    growth_mb = float(result.stdout.split()[-1])
    if offset == 0:
        assert growth_mb < 128 + 64, f"peak RSS grew by {growth_mb:.0f} MB"
    else:
        assert growth_mb > 2 * 128 - 32, f"peak RSS grew by {growth_mb:.0f} MB only"


def test_inter_op_threads_zero_runs_on_the_calling_thread(tmp_path):
    x = np.arange(5, dtype=np.float32)
    with load_neuropod(identity_package(tmp_path / "id"), intra_op_threads=1, inter_op_threads=0) as model:
        np.testing.assert_array_equal(model.infer({"x": x})["double"], x * 2)
    with pytest.raises(neuropods_native.InvalidOptionError, match="intra_op_threads"):
        load_neuropod(tmp_path / "id", intra_op_threads=0)


def test_visible_gpu_without_a_gpu_falls_back_with_a_warning(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="neuropods"):
        with load_neuropod(identity_package(tmp_path / "id"), visible_gpu=0) as model:
            np.testing.assert_array_equal(model.infer({"x": np.ones(2, np.float32)})["double"], [2, 2])
    messages = [r.getMessage() for r in caplog.records if r.name == "neuropods"]
    assert any("visible_gpu=0" in m and "CPU" in m for m in messages), messages


@pytest.mark.xfail(
    tuple(int(part) for part in tf.__version__.split(".")[:2]) < (2, 21),
    strict=True,
    reason="TF 2.20 logs through absl at its first run (absl's 'before InitializeLog' notice and an "
    "MLIR INFO line), past the filter of its start-up lines and ignoring TF_CPP_MIN_LOG_LEVEL",
)
def test_startup_log_is_quiet_unless_the_user_asks(tmp_path):
    # A process that never imported TF's Python package: the backend opens
    # TF's libraries itself, which print INFO lines while initialising.
    import subprocess
    import sys

    package = identity_package(tmp_path / "id")
    code = (
        "import numpy as np\n"
        "from neuropods.loader import load_neuropod\n"
        f"m = load_neuropod({str(package)!r})\n"
        "print(m.infer({'x': np.ones(2, np.float32)})['double'].tolist())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "[2.0, 2.0]"
    assert quiet.stderr == ""
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"
    verbose = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert verbose.returncode == 0, verbose.stderr
    assert "I0000" in verbose.stderr


# ------------------------------------------------- the backend's 0/config.json


@pytest.fixture(scope="module")
def tf_packages(tmp_path_factory):
    """A frozen-graph package and a SavedModel package, as the packager
    writes them (each loads as is)."""
    root = tmp_path_factory.mktemp("tf_backend_config")
    common = dict(model_name="m", package_as_zip=False)  # folders: cases edit their files
    create_tensorflow_neuropod(
        neuropod_path=root / "graph", input_spec=ADD_SPEC_IN, output_spec=ADD_SPEC_OUT,
        node_name_mapping=ADD_MAPPING, graph_def=addition_graph_def(), **common,
    )
    create_tensorflow_neuropod(
        neuropod_path=root / "saved", input_spec=SCALER_IN, output_spec=SCALER_OUT,
        trackable_obj=Scaler(), **common,
    )
    return {"graph": root / "graph", "saved": root / "saved"}


TF_CONFIG_CASES = {
    # id: (package, change to 0/config.json, "field: reason" the error names)
    "signature_name_not_string": ("saved", lambda c: {**c, "signature_name": 3},
                                  "signature_name: expected a string, got a number"),
    "signature_keys_not_object": ("saved", lambda c: {**c, "signature_keys": "scaled"},
                                  "signature_keys: expected an object, got a string"),
    "init_op_name_not_string": ("graph", lambda c: {**c, "init_op_names": [1]},
                                "init_op_names[0]: expected a string, got a number"),
    "init_op_names_not_list": ("graph", lambda c: {**c, "init_op_names": 7},
                               "init_op_names: expected a list or a string, got a number"),
    "init_op_names_nonempty_object": ("graph", lambda c: {**c, "init_op_names": {"a": "init"}},
                                      "init_op_names: expected a list or a string, got an object"),
    "node_name_mapping_not_object": ("graph", lambda c: {**c, "node_name_mapping": ["x", "y", "out"]},
                                     "node_name_mapping: expected an object, got a list"),
    "node_name_not_string": ("graph", lambda c: {**c, "node_name_mapping": {**c["node_name_mapping"], "x": 0}},
                             "node_name_mapping.x: expected a string, got a number"),
    "node_name_mapping_missing": ("graph", lambda c: {k: v for k, v in c.items() if k != "node_name_mapping"},
                                  "node_name_mapping: missing"),
    "node_name_mapping_incomplete": ("graph", lambda c: {**c, "node_name_mapping": {"x": ADD_MAPPING["x"]}},
                                     "node_name_mapping: no entry for"),
    "unknown_field": ("graph", lambda c: {**c, "input_names": ["x"]},
                      "input_names: unknown field (known: node_name_mapping, init_op_names, "
                      "signature_name, signature_keys)"),
    "not_an_object": ("graph", lambda c: [c], "<document>: expected a JSON object, got a list"),
}


@pytest.mark.parametrize("case", list(TF_CONFIG_CASES))
def test_wrong_fields_in_the_backend_config_are_config_errors(tmp_path, tf_packages, case):
    which, change, expected = TF_CONFIG_CASES[case]
    path = shutil.copytree(tf_packages[which], tmp_path / which)
    assert_backend_config_error(path, change, expected, "tensorflow")
