"""Quick side-by-side: one `infer` of a 4-element TorchScript addition model
through Neuropods vs calling the same module from Python with numpy<->torch
conversion. The two sides are interleaved so that drift cancels; prints the
median microseconds per call and the ratio.

    python benchmarks/torchscript_tiny.py [rounds] [calls_per_round]
"""

import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

from neuropods.loader import load_neuropod
from neuropods.packagers import create_torchscript_neuropod


class Addition(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor):
        return {"out": x + y}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.script(Addition())
    path = tempfile.mkdtemp() + "/addition"
    spec = [{"name": n, "dtype": "float32", "shape": ("n",)} for n in ("x", "y")]
    create_torchscript_neuropod(
        path, "addition", module=module, input_spec=spec,
        output_spec=[{"name": "out", "dtype": "float32", "shape": ("n",)}],
    )
    model = load_neuropod(path, intra_op_threads=1)
    x = np.arange(4, dtype=np.float32)

    def neuropods(n: int) -> None:
        for _ in range(n):
            model.infer({"x": x, "y": x})

    def torch_python(n: int) -> None:
        with torch.inference_mode():
            for _ in range(n):
                module(torch.from_numpy(x), torch.from_numpy(x))["out"].numpy()

    sides = {"neuropods": neuropods, "torch.jit from Python": torch_python}
    times = {name: [] for name in sides}
    for run in sides.values():
        run(calls)  # warm-up
    for _ in range(rounds):
        for name, run in sides.items():
            start = time.perf_counter()
            run(calls)
            times[name].append((time.perf_counter() - start) / calls * 1e6)
    for name, samples in times.items():
        print(f"{name:24s} median {statistics.median(samples):6.2f} us/call "
              f"(min {min(samples):.2f}, max {max(samples):.2f})")
    ratio = statistics.median(times["neuropods"]) / statistics.median(times["torch.jit from Python"])
    print(f"ratio neuropods / torch.jit: {ratio:.2f}")


if __name__ == "__main__":
    main()
