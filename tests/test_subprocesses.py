"""Behaviour that needs a fresh process: imports without frameworks, a venv
without torch, process-wide libtorch state, a first-error deadlock, and the
Rust example binary."""

import glob
import json
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

from helpers import NEUROPODS_HOME, TORCH_DIR, clean_env, find_infer_example, make_venv, run_python

def test_import_needs_no_framework(addition_package):
    result = run_python(
        f"""
        import sys
        import neuropods, neuropods.loader, neuropods_native, neuropods.packagers, neuropods.cli
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorflow", "ray", "pyarrow"))
        assert loaded == [], loaded
        # Running a TorchScript model does not import the torch package either.
        import numpy as np
        with neuropods.loader.load_neuropod({addition_package!r}) as model:
            out = model.infer({{"x": np.ones(2, np.float32), "y": np.ones(2, np.float32)}})
        assert out["out"].tolist() == [2.0, 2.0]
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorflow"))
        assert loaded == [], loaded
        print("OK")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


# ------------------------------------------------------- venv without torch


def _wheel():
    """The wheel under test: NEUROPODS_TEST_WHEEL (scripts/test-matrix.sh sets
    it to the wheel of the venv's Python), else the newest dev wheel."""
    if os.environ.get("NEUROPODS_TEST_WHEEL"):
        return os.environ["NEUROPODS_TEST_WHEEL"]
    home = os.environ.get("NEUROPODS_HOME", NEUROPODS_HOME)
    wheels = sorted(glob.glob(os.path.join(home, "dist", "neuropods-*.whl")), key=os.path.getmtime)
    return wheels[-1] if wheels else None


def venv_with_wheel(tmp_path_factory, name, numpy_requirement):
    """A plain venv (no system site-packages, so no framework is visible)
    holding only numpy (as `numpy_requirement` says) and the built wheel;
    returns its python. Skips when there is no wheel or pip cannot install."""
    wheel = _wheel()
    if wheel is None:
        pytest.skip("no built wheel in $NEUROPODS_HOME/dist (run scripts/lib/build.sh)")
    return make_venv(tmp_path_factory.mktemp(name) / "venv", [numpy_requirement, wheel])


@pytest.fixture(scope="module")
def tf_addition_package(tmp_path_factory):
    """A frozen TF addition graph, packaged."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from neuropods.packagers import create_tensorflow_neuropod

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        tf.add(x, x, name="out")
    path = tmp_path_factory.mktemp("tf") / "addition"
    create_tensorflow_neuropod(
        neuropod_path=path, model_name="tf_addition",
        input_spec=[{"name": "x", "dtype": "float32", "shape": (None,)}],
        output_spec=[{"name": "out", "dtype": "float32", "shape": (None,)}],
        node_name_mapping={"x": "x:0", "out": "out:0"}, graph_def=graph.as_graph_def(),
    )
    return str(path)


@pytest.fixture(scope="module")
def onnx_addition_package(tmp_path_factory):
    """An ONNX graph computing out = x + x, packaged."""
    from onnx import TensorProto, helper

    from neuropods.packagers import create_onnx_neuropod

    vector = ["n"]
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["out"])], "addition",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, vector)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, vector)],
    )
    path = tmp_path_factory.mktemp("onnx") / "addition"
    create_onnx_neuropod(neuropod_path=path, model_name="onnx_addition", onnx_model=helper.make_model(graph))
    return str(path)


@pytest.fixture(scope="module")
def torchless_results(tmp_path_factory, addition_package, tf_addition_package, onnx_addition_package):
    """Loads a TorchScript, a TF and an ONNX package from a fresh venv
    holding only numpy and the built wheel; returns what the errors looked
    like there, by platform."""
    python = venv_with_wheel(tmp_path_factory, "torchless", "numpy")
    result = run_python(
        f"""
        import importlib.util, json, sys
        assert importlib.util.find_spec("torch") is None, "torch is visible"
        import neuropods, neuropods.loader, neuropods_native, neuropods.packagers
        import numpy as np
        # The rest of the package works without torch.
        blob = neuropods_native.serialize({{"a": np.arange(3.0)}})
        assert neuropods_native.deserialize(blob)["a"].tolist() == [0.0, 1.0, 2.0]
        results = {{}}
        packages = [("torchscript", {addition_package!r}), ("tensorflow", {tf_addition_package!r}),
                    ("onnx", {onnx_addition_package!r})]
        for platform, package in packages:
            try:
                neuropods.loader.load_neuropod(package)
            except Exception as e:
                results[platform] = {{"class": type(e).__name__,
                                     "mro": [c.__name__ for c in type(e).__mro__],
                                     "message": str(e),
                                     "torch_imported": "torch" in sys.modules}}
            else:
                results[platform] = {{"class": None}}
        # `neuropods batch` without Ray says what to install.
        import contextlib, io, neuropods.cli
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = neuropods.cli.main(["batch", {addition_package!r}, "--input", "in", "--output", "out"])
        results["batch"] = {{"code": code, "stderr": err.getvalue()}}
        print(json.dumps(results))
        """,
        python=python,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_batch_command_without_ray_says_what_to_install(torchless_results):
    result = torchless_results["batch"]
    assert result["code"] == 1
    assert result["stderr"].strip() == (
        "neuropods batch: ImportError: neuropods batch needs Ray Data: pip install 'neuropods[ray]'"
    ), result


@pytest.fixture
def torchless_result(torchless_results):
    return torchless_results["torchscript"]


@pytest.mark.slow
def test_missing_tensorflow_is_framework_not_found(torchless_results):
    result = torchless_results["tensorflow"]
    assert result["class"] == "FrameworkNotFoundError", result
    assert "pip install tensorflow-cpu==2.21.0" in result["message"]
    assert "libtensorflow" in result["message"], result["message"]


@pytest.mark.slow
def test_missing_onnxruntime_is_framework_not_found(torchless_results):
    result = torchless_results["onnx"]
    assert result["class"] == "FrameworkNotFoundError", result
    message = result["message"]
    assert "pip install onnxruntime" in message and "NEUROPODS_ONNXRUNTIME_DIR" in message, message
    # The detail says where it looked: the wheel's folder beside neuropods_native.
    assert "no libonnxruntime.so in" in message and "onnxruntime/capi" in message, message


@pytest.mark.slow
def test_missing_torch_is_framework_not_found(torchless_result):
    assert torchless_result["class"] == "FrameworkNotFoundError", torchless_result
    assert "BackendNotFoundError" in torchless_result["mro"]
    assert "ImportError" in torchless_result["mro"]
    assert "NeuropodError" in torchless_result["mro"]
    message = torchless_result["message"]
    assert "pip install torch==2.13.0" in message
    assert "torchscript" in message
    assert not torchless_result["torch_imported"]


# Once guarded a bug this suite found (since fixed): FrameworkNotFoundError's detail was only
# '(dlopen failed)', the loader's own message lost. The torch backend is now chosen by the
# installed torch's release before anything is opened, so with no torch the detail is where
# the core looked: the torch beside the installed wheel.
@pytest.mark.slow
def test_missing_torch_error_says_where_it_looked(torchless_result):
    message = torchless_result["message"]
    detail = message.split("(", 1)[1]
    assert "no libtorch_cpu.so is loaded or in" in detail, message
    assert os.path.join("site-packages", "torch", "lib") in detail, message


# ------------------------------------------------------- numpy 1.x strings


@pytest.fixture(scope="module")
def numpy1_python(tmp_path_factory):
    """A fresh venv with numpy 1.x (no StringDType) and the built wheel."""
    return venv_with_wheel(tmp_path_factory, "numpy1", "numpy<2")


@pytest.mark.slow
def test_strings_on_numpy_1_are_fixed_width_and_capped(numpy1_python):
    # numpy 1.x has no variable-width strings: `<U` arrays, and one whose
    # fixed width would multiply the size (one 1 MB string among 99,999
    # short ones: 400 GB) is OutOfMemoryError, not an abort.
    result = run_python(
        """
        import json
        import numpy as np
        import neuropods_native as N
        small = N.deserialize(N.serialize(np.array(["ab", "héllo"])))
        strings = np.empty(100_000, dtype=object)
        strings[:] = "ab"
        strings[0] = "x" * 1_000_000
        try:
            N.deserialize(N.serialize(strings))
            error = None
        except MemoryError as e:
            error = {"class": type(e).__name__, "neuropod": isinstance(e, N.NeuropodError), "message": str(e)}
        print(json.dumps({"numpy": np.__version__, "dtype": str(small.dtype), "values": small.tolist(),
                          "error": error}))
        """,
        python=numpy1_python,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["numpy"].startswith("1."), out
    assert out["dtype"] == "<U5" and out["values"] == ["ab", "héllo"]
    assert out["error"] is not None and out["error"]["class"] == "OutOfMemoryError" and out["error"]["neuropod"]
    assert "400000000000 bytes" in out["error"]["message"]


# ------------------------------------------------- process-wide libtorch state


# Guards a bug this suite found (since fixed), as it was: loading with inter_op_threads after
# libtorch's inter-op pool was configured or started elsewhere in the process (here by torch
# itself) raises InternalError ('panic: called `Result::unwrap()` ... cannot set number of
# interop threads'). apply_threads in crates/neuropods-torchscript/src/lib.rs calls the
# panicking tch::set_num_interop_threads; it should warn and ignore the value (as it does for a
# second Neuropods load) or raise InvalidOptionError.
def test_inter_op_threads_when_torch_already_set_them(addition_package):
    result = run_python(
        f"""
        import logging, torch, numpy as np
        import neuropods_native
        torch.set_num_interop_threads(2)
        try:
            model = neuropods_native.Neuropod({addition_package!r}, inter_op_threads=3)
        except neuropods_native.NeuropodError as e:
            print("ERROR", type(e).__name__, str(e)[:300])
        else:
            out = model.infer({{"x": np.ones(2, np.float32), "y": np.ones(2, np.float32)}})
            assert out["out"].tolist() == [2.0, 2.0]
            print("OK")
        """,
        env=clean_env(RUST_BACKTRACE="0"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "OK", result.stdout


def test_inter_op_threads_second_load_logs_warning(addition_package):
    # In a fresh process: the first load sets it, the second is ignored with a
    # logged warning (and both models work).
    result = run_python(
        f"""
        import logging, numpy as np
        import neuropods_native
        records = []
        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record.getMessage())
        logging.getLogger("neuropods").addHandler(Keep())
        first = neuropods_native.Neuropod({addition_package!r}, inter_op_threads=2)
        assert records == [], records
        second = neuropods_native.Neuropod({addition_package!r}, inter_op_threads=3)
        assert any("inter_op_threads" in r for r in records), records
        for m in (first, second):
            out = m.infer({{"x": np.ones(2, np.float32), "y": np.ones(2, np.float32)}})
            assert out["out"].tolist() == [2.0, 2.0]
        print("OK")
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "OK"


# ---------------------------------------------------------- deadlock


DEADLOCK_SCRIPT = """
import itertools, sys, threading
import numpy as np
import neuropods_native

model = neuropods_native.Neuropod(sys.argv[1])
model.close()  # every infer now raises ModelClosedError
inputs = {"x": np.ones(4, np.float32), "y": np.ones(4, np.float32)}
go = threading.Event()
print("loaded", flush=True)

def other_thread():
    go.wait()
    try:
        model.infer(inputs)
    except neuropods_native.ModelClosedError:
        pass

t = threading.Thread(target=other_thread)
t.start()
go.set()
# Hold the GIL inside C for a while (filter skips the zeros without running
# bytecode) so that the woken thread asks for the GIL, then call infer straight
# from C. This is the first Neuropods error this process raises.
try:
    list(map(model.infer, filter(None, itertools.chain(itertools.repeat(0, 20_000_000), [inputs]))))
except neuropods_native.ModelClosedError:
    pass
t.join()
print("done", flush=True)
"""


# Guards a bug this suite found (since fixed), as it was: deadlock. Neuropod::model()
# (crates/neuropods-py/src/model.rs) keeps the model Mutex locked while it raises
# ModelClosedError; the first raise of the process initialises a PyOnceLock in errors::raise,
# which detaches from the interpreter. Another thread that then takes the GIL and calls infer
# blocks on the Mutex while holding the GIL, and the first thread waits for the GIL forever.
# (close() also locks that Mutex while attached.) The guard should be dropped before raising.
def test_first_error_deadlock(addition_package, tmp_path):
    script = tmp_path / "deadlock.py"
    script.write_text(DEADLOCK_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), addition_package],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        # Loading libtorch may be slow on a busy machine; the rest takes < 1 s.
        for _ in range(600):
            if lines or proc.poll() is not None:
                break
            reader.join(0.1)
        assert lines[:1] == ["loaded\n"], (lines, proc.poll())
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("deadlock: the process did not finish within 10 s after loading")
        reader.join(5)
        assert proc.returncode == 0, proc.returncode
        assert lines == ["loaded\n", "done\n"]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(5)
        proc.stdout.close()
        proc.stderr.close()


# ------------------------------------------------------------ Rust example


def test_rust_infer_example(addition_package):
    binary = find_infer_example()
    if binary is None:
        pytest.skip("$CARGO_TARGET_DIR/release/examples/infer is not built (cargo build --release --examples)")
    result = subprocess.run(
        [binary, addition_package],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(LIBTORCH=TORCH_DIR),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "model addition_model (torchscript)"
    match = re.fullmatch(r"out: float32 \[(\d+)\] \[(.*)\]", lines[1])
    assert match, lines
    # The example fills each input with 0, 1, 2, ... and gives free dims size 4.
    n = int(match.group(1))
    assert n == 4
    x = y = np.arange(n, dtype=np.float32)
    printed = np.array([float(v) for v in match.group(2).split(",")], np.float32)
    np.testing.assert_array_equal(printed, x + y)


def test_rust_infer_example_reports_errors(tmp_path):
    binary = find_infer_example()
    if binary is None:
        pytest.skip("$CARGO_TARGET_DIR/release/examples/infer is not built")
    result = subprocess.run(
        [binary, str(tmp_path / "missing")], capture_output=True, text=True, timeout=60, env=clean_env(LIBTORCH=TORCH_DIR)
    )
    assert result.returncode != 0
    # main returns Result<_, Box<dyn Error>>: Rust prints the error's Debug form.
    assert "PackageNotFound" in result.stderr and str(tmp_path / "missing") in result.stderr
