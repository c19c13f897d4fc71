"""Cases 1 and 2: a TorchScript model through `infer` vs calling the
`torch.jit` module from Python, numpy in and numpy out on both sides."""

import os
import warnings
from typing import List

import numpy as np
import torch

from neuropods.loader import load_neuropod
from neuropods.packagers import create_torchscript_neuropod

from .harness import Comparison, Settings, interleave, paired

# Packages are folders here (package_as_zip=False): cases read the model
# files inside them, and loads are timed without a zip's extraction.

# Sizes of the medium model: an MLP whose call takes a few milliseconds on
# one core of the development machine.
MLP_BATCH, MLP_WIDTH, MLP_HIDDEN = 32, 512, 2048


class Addition(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor):
        return {"out": x + y}


class MLP(torch.nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(width, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, width),
        )

    def forward(self, x: torch.Tensor):
        return {"out": self.layers(x)}


def script(module: torch.nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        # torch.jit.script warns that TorchScript is deprecated.
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(module.eval())


def package_addition(work: str) -> str:
    path = os.path.join(work, "ts_addition")
    spec = [{"name": n, "dtype": "float32", "shape": ("n",)} for n in ("x", "y")]
    create_torchscript_neuropod(
        path, "addition", module=script(Addition()), input_spec=spec,
        output_spec=[{"name": "out", "dtype": "float32", "shape": ("n",)}],
        package_as_zip=False,
    )
    return path


def package_mlp(work: str, width: int = MLP_WIDTH, hidden: int = MLP_HIDDEN, name: str = "mlp") -> str:
    torch.manual_seed(0)
    path = os.path.join(work, f"ts_{name}")
    create_torchscript_neuropod(
        path, name, module=script(MLP(width, hidden)),
        input_spec=[{"name": "x", "dtype": "float32", "shape": ("batch", width)}],
        output_spec=[{"name": "out", "dtype": "float32", "shape": ("batch", width)}],
        package_as_zip=False,
    )
    return path


def mlp_input() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((MLP_BATCH, MLP_WIDTH), dtype=np.float32)


def mlp_weights() -> List[np.ndarray]:
    """Weights of the MLP's three layers, for the frameworks that take
    them as constants (TF graphs, ONNX initializers)."""
    rng = np.random.default_rng(1)
    shapes = [(MLP_WIDTH, MLP_HIDDEN), (MLP_HIDDEN, MLP_HIDDEN), (MLP_HIDDEN, MLP_WIDTH)]
    return [(rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32) for s in shapes]


def run(settings: Settings, work: str) -> List[Comparison]:
    # Neuropods runs libtorch in this process, so its thread setting is
    # torch's too: both sides run with one intra-op thread.
    results = []

    model = load_neuropod(package_addition(work), intra_op_threads=1)
    module = torch.jit.load(os.path.join(work, "ts_addition", "0", "data", "model.pt"))
    x = np.arange(4, dtype=np.float32)

    def neuropods(n: int) -> None:
        for _ in range(n):
            model.infer({"x": x, "y": x})

    def torch_jit(n: int) -> None:
        with torch.inference_mode():
            for _ in range(n):
                module(torch.from_numpy(x), torch.from_numpy(x))["out"].numpy()

    samples = interleave({"neuropods": neuropods, "torch.jit from Python": torch_jit}, settings.rounds, settings.calls)
    results.append(paired(
        "1", "TorchScript tiny (4-element add)", samples, "neuropods", "torch.jit from Python",
        target="ratio <= 1.0",
    ))

    model = load_neuropod(package_mlp(work), intra_op_threads=1)
    module = torch.jit.load(os.path.join(work, "ts_mlp", "0", "data", "model.pt"))
    x = mlp_input()
    with torch.inference_mode():
        expected = module(torch.from_numpy(x))["out"].numpy()
    np.testing.assert_allclose(model.infer({"x": x})["out"], expected, rtol=1e-5, atol=1e-5)

    def neuropods_mlp(n: int) -> None:
        for _ in range(n):
            model.infer({"x": x})

    def torch_jit_mlp(n: int) -> None:
        with torch.inference_mode():
            for _ in range(n):
                module(torch.from_numpy(x))["out"].numpy()

    samples = interleave(
        {"neuropods": neuropods_mlp, "torch.jit from Python": torch_jit_mlp},
        settings.rounds, settings.scaled(settings.calls // 50),
    )
    results.append(paired(
        "2", f"TorchScript medium (MLP {MLP_BATCH}x{MLP_WIDTH}, hidden {MLP_HIDDEN})", samples,
        "neuropods", "torch.jit from Python", target="overhead <= 2% (ratio <= 1.02)",
    ))
    for result in results:
        result.met = result.ratio["median"] <= (1.0 if result.case == "1" else 1.02)
    return results
