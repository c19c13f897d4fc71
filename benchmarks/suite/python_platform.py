"""Case 5: a python-platform package through `infer` vs calling the same
callable directly; the difference is the backend's cost per call (spec
checks, input copies, GIL hand-off)."""

import importlib
import os
import sys
from typing import List

import numpy as np

from neuropods.loader import load_neuropod
from neuropods.packagers import create_python_neuropod

from .harness import Comparison, Settings, interleave, paired, summary

CODE = '''
def get_model(data_root):
    def add(x, y):
        return {"out": x + y}
    return add
'''


def run(settings: Settings, work: str) -> List[Comparison]:
    source = os.path.join(work, "src")
    os.makedirs(os.path.join(source, "bench_adder"))
    open(os.path.join(source, "bench_adder", "__init__.py"), "w").close()
    with open(os.path.join(source, "bench_adder", "main.py"), "w") as f:
        f.write(CODE)
    spec = [{"name": n, "dtype": "float32", "shape": ("n",)} for n in ("x", "y")]
    create_python_neuropod(
        os.path.join(work, "py_addition"), "addition", data_paths=[],
        code_path_spec=[{"python_root": source, "dirs_to_package": [""]}],
        entrypoint_package="bench_adder.main", entrypoint="get_model",
        input_spec=spec, output_spec=[{"name": "out", "dtype": "float32", "shape": ("n",)}],
    )
    model = load_neuropod(os.path.join(work, "py_addition"))
    sys.path.insert(0, source)
    direct = importlib.import_module("bench_adder.main").get_model(None)
    x = np.arange(4, dtype=np.float32)

    def neuropods(n: int) -> None:
        for _ in range(n):
            model.infer({"x": x, "y": x})

    def callable_directly(n: int) -> None:
        for _ in range(n):
            direct(x=x, y=x)

    samples = interleave({"neuropods": neuropods, "callable directly": callable_directly},
                         settings.rounds, settings.calls * 2)
    result = paired("5", "Python platform (4-element add)", samples, "neuropods", "callable directly",
                    target="overhead <= 10 us/call")
    overheads = [a - b for a, b in zip(samples["neuropods"], samples["callable directly"])]
    result.extra = {"overhead us/call": summary(overheads)["median"]}
    result.met = result.extra["overhead us/call"] <= 10.0
    return [result]
