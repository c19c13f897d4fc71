"""Quick side-by-side: one `infer` of a python-platform package (4-element
addition) through Neuropods vs calling the same callable directly.
Interleaved; prints medians and the per-call overhead.

    python benchmarks/python_tiny.py [rounds] [calls_per_round]
"""

import importlib
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from neuropods.loader import load_neuropod
from neuropods.packagers import create_python_neuropod

CODE = '''
def get_model(data_root):
    def add(x, y):
        return {"out": x + y}
    return add
'''


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    work = tempfile.mkdtemp()
    os.makedirs(os.path.join(work, "src", "adder"))
    open(os.path.join(work, "src", "adder", "__init__.py"), "w").close()
    with open(os.path.join(work, "src", "adder", "main.py"), "w") as f:
        f.write(CODE)
    spec = [{"name": n, "dtype": "float32", "shape": ("n",)} for n in ("x", "y")]
    create_python_neuropod(
        os.path.join(work, "pkg"), "adder", data_paths=[],
        code_path_spec=[{"python_root": os.path.join(work, "src"), "dirs_to_package": [""]}],
        entrypoint_package="adder.main", entrypoint="get_model",
        input_spec=spec, output_spec=[{"name": "out", "dtype": "float32", "shape": ("n",)}],
    )
    model = load_neuropod(os.path.join(work, "pkg"))
    sys.path.insert(0, os.path.join(work, "src"))
    direct = importlib.import_module("adder.main").get_model(None)
    x = np.arange(4, dtype=np.float32)

    def neuropods(n):
        for _ in range(n):
            model.infer({"x": x, "y": x})

    def callable_directly(n):
        for _ in range(n):
            direct(x=x, y=x)

    sides = {"neuropods": neuropods, "callable directly": callable_directly}
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
        print(f"{name:18s} median {medians[name]:6.2f} us/call (min {min(samples):.2f}, max {max(samples):.2f})")
    print(f"overhead: {medians['neuropods'] - medians['callable directly']:.2f} us/call")


if __name__ == "__main__":
    main()
