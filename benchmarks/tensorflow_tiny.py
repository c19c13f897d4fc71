"""Quick side-by-side: one `infer` of a 4-element TensorFlow addition graph
through Neuropods vs TF's own Python API on the same graph
(`tf.compat.v1.Session.run`) and on the same model as a SavedModel
(`signatures["serving_default"]`). Interleaved; prints medians and ratios.

Two thread settings, the same on both sides: TF's defaults, and ops on the
calling thread (neuropods `inter_op_threads=0`, TF
`inter_op_parallelism_threads=-1`), which saves a thread hand-off per call.
A SavedModel signature call runs eagerly and has no such session setting.

    python benchmarks/tensorflow_tiny.py [rounds] [calls_per_round]
"""

import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from neuropods.loader import load_neuropod
from neuropods.packagers import create_tensorflow_neuropod


class Addition(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.float32)])
    def __call__(self, x, y):
        return {"out": x + y}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    graph = tf.Graph()
    with graph.as_default():
        x_in = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        y_in = tf.compat.v1.placeholder(tf.float32, [None], name="y")
        out = tf.add(x_in, y_in, name="out")
    work = tempfile.mkdtemp()
    spec = [{"name": n, "dtype": "float32", "shape": ("n",)} for n in ("x", "y")]
    create_tensorflow_neuropod(
        neuropod_path=work + "/graph", model_name="addition", input_spec=spec,
        output_spec=[{"name": "out", "dtype": "float32", "shape": ("n",)}],
        node_name_mapping={"x": "x:0", "y": "y:0", "out": "out:0"}, graph_def=graph.as_graph_def(),
    )
    model = load_neuropod(work + "/graph")
    model_caller_thread = load_neuropod(work + "/graph", inter_op_threads=0)
    session = tf.compat.v1.Session(graph=graph)
    config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=-1)
    session_caller_thread = tf.compat.v1.Session(graph=graph, config=config)
    module = Addition()
    tf.saved_model.save(module, work + "/saved", signatures=module.__call__)
    signature = tf.saved_model.load(work + "/saved").signatures["serving_default"]
    x = np.arange(4, dtype=np.float32)

    def neuropods(n, model=model):
        for _ in range(n):
            model.infer({"x": x, "y": x})

    def session_run(n, session=session):
        for _ in range(n):
            session.run(out, feed_dict={x_in: x, y_in: x})

    def saved_model(n):
        for _ in range(n):
            signature(x=tf.constant(x), y=tf.constant(x))["out"].numpy()

    sides = {
        "neuropods": neuropods,
        "tf Session.run": session_run,
        "tf SavedModel signature": saved_model,
        "neuropods, calling thread": lambda n: neuropods(n, model_caller_thread),
        "tf Session.run, calling thread": lambda n: session_run(n, session_caller_thread),
    }
    times = {name: [] for name in sides}
    for run in sides.values():
        run(calls)
    for _ in range(rounds):
        for name, run in sides.items():
            start = time.perf_counter()
            run(calls)
            times[name].append((time.perf_counter() - start) / calls * 1e6)
    medians = {name: statistics.median(samples) for name, samples in times.items()}
    for name, samples in times.items():
        print(f"{name:32s} median {medians[name]:7.2f} us/call (min {min(samples):.2f}, max {max(samples):.2f})")
    ratios = [
        ("tf Session.run", "neuropods"),
        ("tf SavedModel signature", "neuropods"),
        ("tf Session.run, calling thread", "neuropods, calling thread"),
        ("tf SavedModel signature", "neuropods, calling thread"),
    ]
    for theirs, ours in ratios:
        print(f"{theirs} / {ours}: {medians[theirs] / medians[ours]:.1f}x")


if __name__ == "__main__":
    main()
