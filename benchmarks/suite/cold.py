"""Case 9: cold costs. `import neuropods` vs importing a framework, and
loading a model vs the framework's own load, both in a fresh process (the
first load, framework libraries included) and again in a warm one.

Fresh-process figures come from `python -m suite.cold WHAT WORK OUT`, one
process per sample, the sides alternating."""

import json
import os
import sys
import time
from typing import Callable, Dict, List

from .harness import Comparison, Settings, interleave, paired, repeated, run_child

MODEL_FILES = {"torchscript": "0/data/model.pt", "tensorflow": "0/data/model.pb"}


def tf_graph_session(path: str):
    """TF's own way to load a frozen graph: parse, import, open a session."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    with open(path, "rb") as f:
        graph_def.ParseFromString(f.read())
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    return tf.compat.v1.Session(graph=graph)


def fresh_steps(work: str) -> Dict[str, Callable[[], None]]:
    """What a fresh process times, by name; imports happen inside."""

    def load_neuropod(platform: str) -> Callable[[], None]:
        def step() -> None:
            from neuropods.loader import load_neuropod

            load_neuropod(os.path.join(work, platform))

        return step

    def torch_jit_load() -> None:
        import torch

        torch.jit.load(os.path.join(work, "torchscript", MODEL_FILES["torchscript"]))

    def tf_saved_model_load() -> None:
        import tensorflow as tf

        tf.saved_model.load(os.path.join(work, "saved_mlp"))

    return {
        "import neuropods": lambda: __import__("neuropods.loader"),
        "import torch": lambda: __import__("torch"),
        "import tensorflow": lambda: __import__("tensorflow"),
        "neuropods load, torchscript": load_neuropod("torchscript"),
        "import torch + torch.jit.load": torch_jit_load,
        "neuropods load, tensorflow": load_neuropod("tensorflow"),
        "import tensorflow + graph + Session": lambda: tf_graph_session(
            os.path.join(work, "tensorflow", MODEL_FILES["tensorflow"])),
        "import tensorflow + tf.saved_model.load": tf_saved_model_load,
    }


def child(what: str, work: str, out: str) -> None:
    step = fresh_steps(work)[what]
    start = time.perf_counter()
    step()
    elapsed = time.perf_counter() - start
    with open(out, "w") as f:
        json.dump({"ms": elapsed * 1e3}, f)


# (title, Neuropods' step, the alternative's step)
FRESH_PAIRS = [
    ("Fresh process: import", "import neuropods", "import torch"),
    ("Fresh process: import", "import neuropods", "import tensorflow"),
    ("Fresh process: first load, TorchScript MLP", "neuropods load, torchscript", "import torch + torch.jit.load"),
    ("Fresh process: first load, TF MLP", "neuropods load, tensorflow", "import tensorflow + graph + Session"),
    ("Fresh process: first load, TF MLP", "neuropods load, tensorflow", "import tensorflow + tf.saved_model.load"),
]


def fresh(work: str, repeats: int) -> Dict[str, List[float]]:
    names = list(dict.fromkeys(name for _, *pair in FRESH_PAIRS for name in pair))
    samples: Dict[str, List[float]] = {name: [] for name in names}
    out = os.path.join(work, "cold.json")
    for _ in range(repeats):
        for name in names:
            run_child("cold", name, work, out)
            with open(out) as f:
                samples[name].append(json.load(f)["ms"])
    return samples


def run(settings: Settings, work: str) -> List[Comparison]:
    import tensorflow as tf

    from neuropods.loader import load_neuropod

    from .tensorflow import SavedMLP, mlp_graph, mlp_weights, package_graph
    from .torchscript import MLP_WIDTH, package_mlp

    os.rename(package_mlp(work), os.path.join(work, "torchscript"))
    weights = mlp_weights()
    package_graph(os.path.join(work, "tensorflow"), mlp_graph(weights), {"x": ("batch", MLP_WIDTH)})
    saved = SavedMLP(weights)
    tf.saved_model.save(saved, os.path.join(work, "saved_mlp"), signatures=saved.__call__)

    results = []
    samples = fresh(work, 2 if settings.quick else 7)
    for title, ours, theirs in FRESH_PAIRS:
        results.append(paired("9", title, samples, ours, theirs, unit="ms"))

    # Warm: the frameworks are loaded; only the model is read again.
    import torch

    warm_sides = {
        "neuropods load, torchscript": repeated(lambda: load_neuropod(os.path.join(work, "torchscript")).close()),
        "torch.jit.load": repeated(lambda: torch.jit.load(os.path.join(work, "torchscript", MODEL_FILES["torchscript"]))),
        "neuropods load, tensorflow": repeated(lambda: load_neuropod(os.path.join(work, "tensorflow")).close()),
        "tf graph + Session": repeated(
            lambda: tf_graph_session(os.path.join(work, "tensorflow", MODEL_FILES["tensorflow"])).close()),
        "tf.saved_model.load": repeated(lambda: tf.saved_model.load(os.path.join(work, "saved_mlp"))),
    }
    warm = interleave(warm_sides, settings.rounds, settings.scaled(20))
    warm_ms = {name: [us / 1e3 for us in per_call] for name, per_call in warm.items()}
    for title, ours, theirs in [
        ("Warm process: load, TorchScript MLP", "neuropods load, torchscript", "torch.jit.load"),
        ("Warm process: load, TF MLP", "neuropods load, tensorflow", "tf graph + Session"),
        ("Warm process: load, TF MLP", "neuropods load, tensorflow", "tf.saved_model.load"),
    ]:
        results.append(paired("9", title, warm_ms, ours, theirs, unit="ms"))
    results[0].note = "MLP model (25 MB of float32 weights) for the loads"
    return results


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    child(sys.argv[1], sys.argv[2], sys.argv[3])
