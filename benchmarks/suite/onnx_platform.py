"""Cases 17 and 18: an ONNX model through `infer` vs onnxruntime's own
Python API (`InferenceSession.run`) on the same file, with the same session
options on both sides: the tiny case at ONNX Runtime's defaults, the MLP
with one intra-op thread (both run nodes one after another)."""

import os
from typing import Dict, List

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from neuropods.loader import load_neuropod
from neuropods.packagers import create_onnx_neuropod

from .harness import Comparison, Settings, interleave, paired
from .torchscript import MLP_BATCH, MLP_HIDDEN, MLP_WIDTH, mlp_input, mlp_weights


def addition_model() -> onnx.ModelProto:
    vector = ["n"]
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["out"])], "addition",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, vector),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, vector)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, vector)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def mlp_model(weights: List[np.ndarray]) -> onnx.ModelProto:
    """The suite's MLP (as in cases 2 and 4): MatMul and Relu layers."""
    nodes, current = [], "x"
    for i in range(len(weights)):
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"h{i}"]))
        current = f"h{i}"
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"r{i}"]))
            current = f"r{i}"
    nodes.append(helper.make_node("Identity", [current], ["out"]))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", MLP_WIDTH])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", MLP_WIDTH])],
        [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def sides(model, session: onnxruntime.InferenceSession, feeds: Dict[str, np.ndarray]):
    def neuropods(n: int) -> None:
        for _ in range(n):
            model.infer(feeds)

    def session_run(n: int) -> None:
        for _ in range(n):
            session.run(["out"], feeds)

    return {"neuropods": neuropods, "onnxruntime InferenceSession.run": session_run}


def package(work: str, name: str, model: onnx.ModelProto) -> str:
    """The model as a package and as a plain .onnx file."""
    path = os.path.join(work, name)
    onnx.save_model(model, path + ".onnx")
    create_onnx_neuropod(neuropod_path=path, model_name=name, onnx_model_path=path + ".onnx", package_as_zip=False)
    return path


def run(settings: Settings, work: str) -> List[Comparison]:
    results = []

    # Case 17: ONNX Runtime's default session options on both sides.
    path = package(work, "onnx_addition", addition_model())
    model = load_neuropod(path)
    session = onnxruntime.InferenceSession(path + ".onnx", providers=["CPUExecutionProvider"])
    x = np.arange(4, dtype=np.float32)
    feeds = {"x": x, "y": x}
    samples = interleave(sides(model, session, feeds), settings.rounds, settings.calls)
    result = paired("17", "ONNX tiny (4-element add)", samples, "neuropods", "onnxruntime InferenceSession.run",
                    target="no slower than onnxruntime (ratio <= 1.0)")
    result.met = result.ratio["median"] <= 1.0
    results.append(result)

    # Case 18: one intra-op thread on both sides, all graph optimisations
    # (the default of both), nodes run one after another.
    path = package(work, "onnx_mlp", mlp_model(mlp_weights()))
    model = load_neuropod(path, intra_op_threads=1)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    session = onnxruntime.InferenceSession(path + ".onnx", options, providers=["CPUExecutionProvider"])
    feeds = {"x": mlp_input()}
    (expected,) = session.run(["out"], feeds)
    np.testing.assert_allclose(model.infer(feeds)["out"], expected, rtol=1e-5, atol=1e-5)
    samples = interleave(sides(model, session, feeds), settings.rounds, settings.scaled(settings.calls // 50))
    result = paired("18", f"ONNX medium (MLP {MLP_BATCH}x{MLP_WIDTH}, hidden {MLP_HIDDEN}), 1 intra-op thread",
                    samples, "neuropods", "onnxruntime InferenceSession.run",
                    target="overhead <= 2% (ratio <= 1.02)")
    result.met = result.ratio["median"] <= 1.02
    results.append(result)
    return results
