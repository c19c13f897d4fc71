"""ONNX models (platform "onnx") through the same API, on ONNX Runtime:
packages of models that torch.onnx.export wrote and that onnx.helper built,
compared with onnxruntime's own InferenceSession and with torch."""

import json
import logging
import os
import threading
import zipfile

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import models_for_tests as M
import neuropods_native as N
from helpers import STRING_KIND, load, package_tf_addition, run_python, spec
from neuropods.packagers import create_onnx_neuropod


def make_model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "graph", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tensor(name, elem_type, shape):
    return helper.make_tensor_value_info(name, elem_type, shape)


def add_model():
    """out = x + y over float32 vectors of one length."""
    return make_model(
        [helper.make_node("Add", ["x", "y"], ["out"])],
        [tensor("x", TensorProto.FLOAT, ["n"]), tensor("y", TensorProto.FLOAT, ["n"])],
        [tensor("out", TensorProto.FLOAT, ["n"])],
    )


@pytest.fixture(scope="module")
def mlp():
    return M.make_mlp()


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory):
    """The test MLP (same seed, so the same weights as `mlp`) as
    torch.onnx.export (the dynamo exporter, torch's default) writes it, with
    a dynamic batch axis. Exported in a fresh process: the exporter imports
    triton, whose LLVM clashes with the one of TensorFlow's libraries that
    other tests load into this process (a segfault on import)."""
    path = tmp_path_factory.mktemp("export") / "mlp.onnx"
    result = run_python(
        f"""
        import sys, warnings
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        import torch
        import models_for_tests as M
        warnings.simplefilter("ignore")
        torch.onnx.export(
            M.make_mlp(), (torch.zeros(2, 8),), {str(path)!r}, input_names=["x"], output_names=["scores"],
            dynamic_shapes=({{0: torch.export.Dim("batch")}},), dynamo=True, verbose=False,
        )
        """,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return str(path)


@pytest.fixture(scope="module")
def mlp_package(tmp_path_factory, mlp_onnx, mlp):
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    with torch.no_grad():
        expected = mlp(torch.from_numpy(x)).numpy()
    path = tmp_path_factory.mktemp("mlp") / "mlp.zip"
    create_onnx_neuropod(
        neuropod_path=path, model_name="mlp", onnx_model_path=mlp_onnx,
        test_input_data={"x": x}, test_expected_out={"scores": expected},
    )
    return str(path)


def test_torch_export_runs_as_onnxruntime_and_torch_do(mlp_package, mlp_onnx, mlp):
    session = onnxruntime.InferenceSession(mlp_onnx, providers=["CPUExecutionProvider"])
    with load(mlp_package) as model:
        assert model.platform == "onnx"
        # Specs were read from the graph: the export's dynamic axis is a symbol.
        assert model.inputs == [{"name": "x", "dtype": "float32", "shape": ["batch", 8]}]
        assert model.outputs == [{"name": "scores", "dtype": "float32", "shape": ["batch", 4]}]
        for batch in (1, 7, 64):
            x = np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)
            got = model.infer({"x": x})["scores"]
            (reference,) = session.run(None, {"x": x})
            with torch.no_grad():
                expected = mlp(torch.from_numpy(x)).numpy()
            assert got.shape == (batch, 4) and got.dtype == np.float32
            np.testing.assert_allclose(got, reference, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_the_package_is_a_zip_with_the_model_and_test_data(mlp_package):
    with zipfile.ZipFile(mlp_package) as archive:
        names = set(archive.namelist())
        config = json.loads(archive.read("config.json"))
    assert {"0/data/model.onnx", "config.json", "manifest.json"} <= names
    assert any(name.startswith("test_data/") for name in names)
    assert config["platform"] == "onnx"
    from neuropods.utils.eval_utils import load_and_test_neuropod

    load_and_test_neuropod(mlp_package)


def every_dtype_model():
    """Identity over one input of each dtype ONNX and Neuropods share."""
    types = {
        "float16": TensorProto.FLOAT16, "float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE,
        "int8": TensorProto.INT8, "int16": TensorProto.INT16, "int32": TensorProto.INT32,
        "int64": TensorProto.INT64, "uint8": TensorProto.UINT8, "uint16": TensorProto.UINT16,
        "uint32": TensorProto.UINT32, "uint64": TensorProto.UINT64, "bool": TensorProto.BOOL,
        "string": TensorProto.STRING,
    }
    model = make_model(
        [helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]) for name in types],
        [tensor(f"in_{name}", t, [2, 3]) for name, t in types.items()],
        [tensor(f"out_{name}", t, [2, 3]) for name, t in types.items()],
    )
    return model, list(types)


def test_every_dtype_goes_in_and_comes_out(tmp_path):
    model, dtypes = every_dtype_model()
    path = tmp_path / "dtypes"
    create_onnx_neuropod(neuropod_path=path, model_name="dtypes", onnx_model=model, package_as_zip=False)
    rng = np.random.default_rng(0)
    inputs = {}
    for name in dtypes:
        if name == "string":
            inputs[f"in_{name}"] = np.array([["a", "bé", ""], ["onnx", "🦀", "x" * 100]])
        elif name == "bool":
            inputs[f"in_{name}"] = rng.random((2, 3)) > 0.5
        else:
            inputs[f"in_{name}"] = (rng.random((2, 3)) * 100).astype(name)
    with load(path) as m:
        assert {s["name"]: s["dtype"] for s in m.inputs} == {f"in_{n}": n for n in dtypes}
        out = m.infer(inputs)
        for name in dtypes:
            got, sent = out[f"out_{name}"], inputs[f"in_{name}"]
            if name == "string":
                assert got.dtype.kind == STRING_KIND
                assert got.tolist() == sent.tolist()
            else:
                assert got.dtype == sent.dtype, name
                np.testing.assert_array_equal(got, sent)
        # Identity may hand back the fed buffer: an output must not change
        # when the caller writes to its input afterwards.
        before = out["out_float32"].copy()
        inputs["in_float32"][:] = -1
        np.testing.assert_array_equal(out["out_float32"], before)


def test_strings_bool_float16_and_outputs_of_different_dtypes(tmp_path):
    model = make_model(
        [
            helper.make_node("StringConcat", ["words", "suffix"], ["joined"]),
            helper.make_node("RegexFullMatch", ["words"], ["starts_with_n"], pattern="n.*"),
            helper.make_node("Size", ["words"], ["count"]),
            helper.make_node("Add", ["h", "h"], ["doubled"]),
            helper.make_node("Not", ["flags"], ["negated"]),
        ],
        [tensor("words", TensorProto.STRING, ["n"]), tensor("suffix", TensorProto.STRING, [1]),
         tensor("h", TensorProto.FLOAT16, [3]), tensor("flags", TensorProto.BOOL, [2])],
        [tensor("joined", TensorProto.STRING, ["n"]), tensor("starts_with_n", TensorProto.BOOL, ["n"]),
         tensor("count", TensorProto.INT64, []), tensor("doubled", TensorProto.FLOAT16, [3]),
         tensor("negated", TensorProto.BOOL, [2])],
        opset=20,
    )
    inputs = {
        "words": np.array(["neuro", "pods", "ñandú"]),
        "suffix": np.array(["!"]),
        "h": np.array([0.5, -1.25, 1000], np.float16),
        "flags": np.array([True, False]),
    }
    expected = dict(zip(
        ["joined", "starts_with_n", "count", "doubled", "negated"],
        onnxruntime.InferenceSession(model.SerializeToString()).run(None, inputs),
    ))
    path = tmp_path / "mixed.zip"
    create_onnx_neuropod(
        neuropod_path=path, model_name="mixed", onnx_model=model.SerializeToString(),
        test_input_data=inputs, test_expected_out={"count": np.int64(3), "negated": np.array([False, True])},
    )
    with load(path) as m:
        out = m.infer(inputs)
    assert out["joined"].dtype.kind == STRING_KIND
    assert out["joined"].tolist() == ["neuro!", "pods!", "ñandú!"] == expected["joined"].tolist()
    np.testing.assert_array_equal(out["starts_with_n"], [True, False, False])
    np.testing.assert_array_equal(out["starts_with_n"], expected["starts_with_n"])
    assert out["count"].shape == () and out["count"].dtype == np.int64 and int(out["count"]) == 3
    assert out["doubled"].dtype == np.float16
    np.testing.assert_array_equal(out["doubled"], expected["doubled"])
    np.testing.assert_array_equal(out["negated"], [False, True])


def test_spec_violations_name_the_tensor(tmp_path):
    path = tmp_path / "add"
    create_onnx_neuropod(neuropod_path=path, model_name="add", onnx_model=add_model(), package_as_zip=False)
    x = np.arange(4, dtype=np.float32)
    with load(path) as m:
        np.testing.assert_array_equal(m.infer({"x": x, "y": x})["out"], 2 * x)
        with pytest.raises(N.DTypeError, match="input 'y'"):
            m.infer({"x": x, "y": x.astype(np.float64)})
        with pytest.raises(N.ShapeError, match="'n'"):
            m.infer({"x": x, "y": x[:3]})
        with pytest.raises(N.UnknownTensorError, match="input 'z'"):
            m.infer({"x": x, "y": x, "z": x})
        # ONNX Runtime needs every graph input: one left out is the
        # caller's mistake, named before the run.
        with pytest.raises(N.InvalidInputError, match="missing input 'y': the ONNX graph requires every input"):
            m.infer({"x": x})
        np.testing.assert_array_equal(m.infer({"x": x, "y": x})["out"], 2 * x)


def test_empty_tensors_and_strings_onnx_runtime_cannot_hold(tmp_path):
    path = tmp_path / "add"
    create_onnx_neuropod(neuropod_path=path, model_name="add", onnx_model=add_model(), package_as_zip=False)
    empty = np.zeros(0, np.float32)
    with load(path) as m:
        out = m.infer({"x": empty, "y": empty})["out"]
        assert out.shape == (0,) and out.dtype == np.float32
    words = make_model([helper.make_node("Identity", ["s"], ["t"])],
                       [tensor("s", TensorProto.STRING, ["n"])], [tensor("t", TensorProto.STRING, ["n"])])
    path = tmp_path / "words"
    create_onnx_neuropod(neuropod_path=path, model_name="words", onnx_model=words, package_as_zip=False)
    with load(path) as m:
        with pytest.raises(N.InvalidInputError, match=r"input 's': element 1 holds a NUL"):
            m.infer({"s": np.array(["ok", "a\0b"], dtype=object)})
        assert m.infer({"s": np.array(["ok"])})["t"].tolist() == ["ok"]


@pytest.mark.parametrize(
    "kwargs, error, fragments",
    [
        ({"input_spec": [spec("x", "float32", ("n",)), spec("z", "float32", ("n",))]}, ValueError,
         ["'z' is not an input of the graph", "x, y"]),
        ({"output_spec": [spec("total", "float32", ("n",))]}, ValueError, ["'total'", "outputs: out"]),
        ({"input_spec": [spec("x", "float64", ("n",)), spec("y", "float32", ("n",))]}, ValueError,
         ["'x' is float64", "float32"]),
        ({"input_spec": [spec("x", "float32", ("n",))]}, ValueError, ["no entry", "'y'"]),
        ({"onnx_model_path": "also.onnx"}, ValueError, ["exactly one"]),
        ({"onnx_model": None}, ValueError, ["exactly one"]),
        ({"onnx_model": 42}, TypeError, ["ModelProto or bytes", "int"]),
    ],
)
def test_packaging_refuses_specs_the_graph_does_not_have(tmp_path, kwargs, error, fragments):
    arguments = {"onnx_model": add_model(), **kwargs}
    with pytest.raises(error) as info:
        create_onnx_neuropod(neuropod_path=tmp_path / "p", model_name="p", **arguments)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    assert not (tmp_path / "p").exists()


def big_linear_model(seed=0):
    """y = x @ w with a 256x256 weight: large enough to live in external data."""
    w = np.random.default_rng(seed).standard_normal((256, 256)).astype(np.float32)
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [tensor("x", TensorProto.FLOAT, ["batch", 256])],
        [tensor("y", TensorProto.FLOAT, ["batch", 256])],
        [numpy_helper.from_array(w, "w")],
    )
    return model, w


def test_external_data_files_are_copied_beside_the_model(tmp_path):
    model, w = big_linear_model()
    source = tmp_path / "src"
    (source / "weights").mkdir(parents=True)
    onnx.save_model(model, source / "linear.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights/linear.bin", size_threshold=0)
    assert (source / "weights" / "linear.bin").stat().st_size == w.nbytes
    path = tmp_path / "linear"
    create_onnx_neuropod(neuropod_path=path, model_name="linear", onnx_model_path=source / "linear.onnx",
                         package_as_zip=False)
    assert (path / "0" / "data" / "weights" / "linear.bin").is_file()
    x = np.random.default_rng(2).standard_normal((5, 256)).astype(np.float32)
    with load(path) as m:
        np.testing.assert_allclose(m.infer({"x": x})["y"], x @ w, rtol=1e-4, atol=1e-4)
    # A model in memory that points at external files cannot bring them.
    in_memory = onnx.load(source / "linear.onnx", load_external_data=False)
    with pytest.raises(ValueError, match="linear.bin"):
        create_onnx_neuropod(neuropod_path=tmp_path / "q", model_name="q", onnx_model=in_memory)


def test_onnx_torchscript_and_tensorflow_models_alternate_on_threads(tmp_path, addition_package, mlp_package, mlp):
    onnx_add = tmp_path / "onnx_add"
    create_onnx_neuropod(neuropod_path=onnx_add, model_name="onnx_add", onnx_model=add_model(), package_as_zip=False)
    tf_add = package_tf_addition(tmp_path / "tf_add")
    models = [load(p) for p in (onnx_add, addition_package, tf_add, mlp_package)]
    failures = []

    def work(seed):
        rng = np.random.default_rng(seed)
        try:
            for i in range(40):
                n = int(rng.integers(1, 50))
                x, y = rng.random(n, np.float32), rng.random(n, np.float32)
                for model in models[:3]:
                    np.testing.assert_array_equal(model.infer({"x": x, "y": y})["out"], x + y)
                batch = rng.standard_normal((n, 8)).astype(np.float32)
                with torch.no_grad():
                    expected = mlp(torch.from_numpy(batch)).numpy()
                np.testing.assert_allclose(models[3].infer({"x": batch})["scores"], expected, rtol=1e-5, atol=1e-5)
        except Exception as e:  # reported below, on the test's thread
            failures.append(f"thread {seed}, call {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for model in models:
        model.close()
    assert not any(t.is_alive() for t in threads)
    assert failures == []


def test_thread_options_and_parallel_execution(tmp_path):
    model, w = big_linear_model(seed=3)
    path = tmp_path / "linear"
    create_onnx_neuropod(neuropod_path=path, model_name="linear", onnx_model=model, package_as_zip=False)
    x = np.random.default_rng(3).standard_normal((8, 256)).astype(np.float32)
    for options in ({"intra_op_threads": 1}, {"intra_op_threads": 2, "inter_op_threads": 2},
                    {"inter_op_threads": 0}):
        with load(path, **options) as m:
            np.testing.assert_allclose(m.infer({"x": x})["y"], x @ w, rtol=1e-4, atol=1e-4)
    with pytest.raises(N.InvalidOptionError, match="intra_op_threads"):
        load(path, intra_op_threads=0)


def test_visible_gpu_without_cuda_runs_on_cpu_with_a_warning(tmp_path, caplog):
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this runtime has the CUDA execution provider: the fallback is not taken")
    path = tmp_path / "add"
    create_onnx_neuropod(neuropod_path=path, model_name="add", onnx_model=add_model(), package_as_zip=False)
    x = np.arange(3, dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="neuropods"):
        with load(path, visible_gpu=0) as m:
            np.testing.assert_array_equal(m.infer({"x": x, "y": x})["out"], 2 * x)
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "visible_gpu=0" in warning and "CUDA execution provider" in warning and "CPU" in warning


@pytest.mark.gpu
@pytest.mark.skipif(
    "CUDAExecutionProvider" not in onnxruntime.get_available_providers() or not torch.cuda.is_available(),
    reason="needs onnxruntime-gpu and a CUDA device",
)
def test_visible_gpu_runs_on_the_cuda_execution_provider(tmp_path, caplog):
    model, w = big_linear_model()
    path = tmp_path / "linear"
    create_onnx_neuropod(neuropod_path=path, model_name="linear", onnx_model=model, package_as_zip=False)
    x = np.random.default_rng(4).standard_normal((64, 256)).astype(np.float32)
    free_before, _ = torch.cuda.mem_get_info(0)
    with caplog.at_level(logging.WARNING, logger="neuropods"):
        with load(path, visible_gpu=0) as m:
            # The session's CUDA arena holds device memory (no CPU fallback).
            free_loaded, _ = torch.cuda.mem_get_info(0)
            np.testing.assert_allclose(m.infer({"x": x})["y"], x @ w, rtol=1e-3, atol=1e-3)
    assert not [r.getMessage() for r in caplog.records], "fell back to the CPU"
    assert free_loaded < free_before, (free_before, free_loaded)


def test_platform_version_semver_is_checked_against_the_runtime(tmp_path):
    version = onnxruntime.__version__
    ok = tmp_path / "ok"
    create_onnx_neuropod(neuropod_path=ok, model_name="ok", onnx_model=add_model(), package_as_zip=False,
                         platform_version_semver=f"^{version}")
    load(ok).close()
    too_new = tmp_path / "too_new"
    create_onnx_neuropod(neuropod_path=too_new, model_name="too_new", onnx_model=add_model(),
                         package_as_zip=False, platform_version_semver=">=9.0.0")
    with pytest.raises(N.FrameworkVersionError) as info:
        load(too_new)
    assert ">=9.0.0" in str(info.value) and version in str(info.value)


def test_out_of_process(mlp_package, mlp):
    x = np.random.default_rng(4).standard_normal((5, 8)).astype(np.float32)
    with load(mlp_package, use_ope=True) as m:
        assert m.worker_pid not in (None, os.getpid())
        got = m.infer({"x": x})["scores"]
        assert m.worker_pid not in (None, os.getpid())
    with torch.no_grad():
        np.testing.assert_allclose(got, mlp(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)


def test_a_model_loaded_before_fork_runs_in_the_child(tmp_path):
    # ONNX Runtime's pools are per session and survive fork (measured with
    # 1.32): unlike TF, no refusal is needed. Run in a fresh process, not
    # in pytest's, which holds other frameworks' threads.
    model, w = big_linear_model(seed=5)
    path = tmp_path / "linear"
    create_onnx_neuropod(neuropod_path=path, model_name="linear", onnx_model=model, package_as_zip=False)
    result = run_python(
        f"""
        import json, os
        import numpy as np
        from neuropods.loader import load_neuropod
        model = load_neuropod({str(path)!r}, intra_op_threads=2)
        x = np.ones((64, 256), np.float32)
        parent = model.infer({{"x": x}})["y"]
        pid = os.fork()
        if pid == 0:
            import signal
            signal.alarm(30)
            child = model.infer({{"x": x}})["y"]
            os._exit(0 if np.array_equal(child, parent) else 3)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({{"status": status}}))
        """
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"status": 0}
