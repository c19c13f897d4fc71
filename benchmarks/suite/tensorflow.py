"""Cases 3 and 4: a TensorFlow graph through `infer` vs TF's own Python
APIs on the same model: `tf.compat.v1.Session.run`, a session callable
(`Session.make_callable`, TF's fastest graph call from Python) and the same
model saved as a SavedModel and called through its signature."""

import os
from typing import Dict, List

import numpy as np
import tensorflow as tf

from neuropods.loader import load_neuropod
from neuropods.packagers import create_tensorflow_neuropod

from .harness import Comparison, Settings, interleave, paired, summary
from .torchscript import MLP_BATCH, MLP_HIDDEN, MLP_WIDTH, mlp_input, mlp_weights


def addition_graph() -> tf.Graph:
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        y = tf.compat.v1.placeholder(tf.float32, [None], name="y")
        tf.add(x, y, name="out")
    return graph


def mlp_graph(weights: List[np.ndarray]) -> tf.Graph:
    graph = tf.Graph()
    with graph.as_default():
        h = tf.compat.v1.placeholder(tf.float32, [None, MLP_WIDTH], name="x")
        for i, w in enumerate(weights):
            h = tf.matmul(h, tf.constant(w))
            if i < len(weights) - 1:
                h = tf.nn.relu(h)
        tf.identity(h, name="out")
    return graph


class SavedAddition(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.float32)])
    def __call__(self, x, y):
        return {"out": x + y}


class SavedMLP(tf.Module):
    def __init__(self, weights):
        super().__init__()
        self.weights = [tf.constant(w) for w in weights]

    @tf.function(input_signature=[tf.TensorSpec([None, MLP_WIDTH], tf.float32)])
    def __call__(self, x):
        h = x
        for i, w in enumerate(self.weights):
            h = tf.matmul(h, w)
            if i < len(self.weights) - 1:
                h = tf.nn.relu(h)
        return {"out": h}


def package_graph(path: str, graph: tf.Graph, inputs: Dict[str, tuple]) -> None:
    create_tensorflow_neuropod(
        neuropod_path=path, model_name=os.path.basename(path),
        input_spec=[{"name": n, "dtype": "float32", "shape": s} for n, s in inputs.items()],
        output_spec=[{"name": "out", "dtype": "float32", "shape": next(iter(inputs.values()))}],
        node_name_mapping={**{n: f"{n}:0" for n in inputs}, "out": "out:0"},
        graph_def=graph.as_graph_def(),
        package_as_zip=False,
    )


def tf_sides(graph, session, model, signature, feeds: Dict[str, np.ndarray]):
    """The ways to run one model: neuropods and TF's three Python calls."""
    placeholders = {graph.get_tensor_by_name(f"{n}:0"): v for n, v in feeds.items()}
    out = graph.get_tensor_by_name("out:0")
    callable_ = session.make_callable(out, feed_list=list(placeholders))
    values = list(placeholders.values())

    def neuropods(n: int) -> None:
        for _ in range(n):
            model.infer(feeds)

    def session_run(n: int) -> None:
        for _ in range(n):
            session.run(out, feed_dict=placeholders)

    def session_callable(n: int) -> None:
        for _ in range(n):
            callable_(*values)

    def saved_model(n: int) -> None:
        for _ in range(n):
            signature(**{k: tf.constant(v) for k, v in feeds.items()})["out"].numpy()

    return {
        "neuropods": neuropods,
        "tf Session.run": session_run,
        "tf Session callable": session_callable,
        "tf SavedModel signature": saved_model,
    }


def run(settings: Settings, work: str) -> List[Comparison]:
    results = []

    # Case 3 at TF's default thread settings on every side, and again with
    # ops on the calling thread (neuropods inter_op_threads=0, TF
    # inter_op_parallelism_threads=-1; a signature call has no such knob).
    graph = addition_graph()
    package_graph(os.path.join(work, "tf_addition"), graph, {"x": ("n",), "y": ("n",)})
    module = SavedAddition()
    tf.saved_model.save(module, os.path.join(work, "saved_addition"), signatures=module.__call__)
    signature = tf.saved_model.load(os.path.join(work, "saved_addition")).signatures["serving_default"]
    x = np.arange(4, dtype=np.float32)
    feeds = {"x": x, "y": x}
    for label, options, config in [
        ("TF defaults", {}, None),
        ("ops on the calling thread", {"inter_op_threads": 0},
         tf.compat.v1.ConfigProto(inter_op_parallelism_threads=-1)),
    ]:
        model = load_neuropod(os.path.join(work, "tf_addition"), **options)
        session = tf.compat.v1.Session(graph=graph, config=config)
        sides = tf_sides(graph, session, model, signature, feeds)
        samples = interleave(sides, settings.rounds, settings.calls // 3)
        for other in ("tf Session.run", "tf Session callable", "tf SavedModel signature"):
            result = paired("3", f"TensorFlow tiny (4-element add), {label}", samples, "neuropods", other,
                            target="neuropods >= 5x faster (ratio <= 0.2)")
            result.met = result.ratio["median"] <= 0.2
            results.append(result)
        session.close()

    # Case 4: one intra-op thread everywhere (eager included), so both sides
    # do the same arithmetic on the same core.
    weights = mlp_weights()
    graph = mlp_graph(weights)
    package_graph(os.path.join(work, "tf_mlp"), graph, {"x": ("batch", MLP_WIDTH)})
    module = SavedMLP(weights)
    tf.saved_model.save(module, os.path.join(work, "saved_mlp"), signatures=module.__call__)
    signature = tf.saved_model.load(os.path.join(work, "saved_mlp")).signatures["serving_default"]
    model = load_neuropod(os.path.join(work, "tf_mlp"), intra_op_threads=1, inter_op_threads=1)
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
    session = tf.compat.v1.Session(graph=graph, config=config)
    x = mlp_input()
    feeds = {"x": x}
    expected = session.run("out:0", feed_dict={"x:0": x})
    np.testing.assert_allclose(model.infer(feeds)["out"], expected, rtol=1e-4, atol=1e-4)
    sides = tf_sides(graph, session, model, signature, feeds)
    samples = interleave(sides, settings.rounds, settings.scaled(settings.calls // 50))
    medians = {name: summary(s)["median"] for name, s in samples.items() if name != "neuropods"}
    fastest = min(medians, key=medians.get)
    result = paired("4", f"TensorFlow medium (MLP {MLP_BATCH}x{MLP_WIDTH}, hidden {MLP_HIDDEN})", samples,
                    "neuropods", fastest, target="overhead <= 2% over TF's fastest (ratio <= 1.02)")
    result.met = result.ratio["median"] <= 1.02
    result.extra = {f"{name} median us": m for name, m in medians.items()}
    results.append(result)
    return results


# The eager runtime (SavedModel signature calls) takes its thread counts
# once, before its first use; set here, at import, for case 4's fairness.
tf.config.threading.set_intra_op_parallelism_threads(1)
