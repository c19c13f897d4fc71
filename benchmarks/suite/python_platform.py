"""Case 5: a python-platform package through `infer` vs calling the same
callable directly; the difference is the backend's cost per call (spec
checks, input copies, GIL hand-off)."""

import importlib
import os
import sys
from typing import Any, Dict, List

import numpy as np

from neuropods.loader import load_neuropod
from neuropods.packagers import create_python_neuropod

from .harness import Comparison, Settings, difference, interleave, paired

CODE = '''
def get_model(data_root):
    def add(x, y):
        return {"out": x + y}
    return add
'''


def package_python(path: str, source_root: str, module: str, code: str,
                   input_spec: List[Dict[str, Any]], output_spec: List[Dict[str, Any]]) -> None:
    """Packages `code` as the python module `module` (written under
    `source_root`, where the callable can also be imported directly);
    its `get_model(data_root)` returns the model."""
    os.makedirs(os.path.join(source_root, module), exist_ok=True)
    with open(os.path.join(source_root, module, "__init__.py"), "w") as f:
        f.write(code)
    create_python_neuropod(
        path, module, data_paths=[],
        code_path_spec=[{"python_root": source_root, "dirs_to_package": [module]}],
        entrypoint_package=module, entrypoint="get_model", input_spec=input_spec, output_spec=output_spec,
        package_as_zip=False,
    )


def run(settings: Settings, work: str) -> List[Comparison]:
    source = os.path.join(work, "src")
    spec = [{"name": n, "dtype": "float32", "shape": ("n",)} for n in ("x", "y")]
    package_python(os.path.join(work, "py_addition"), source, "bench_adder", CODE,
                   spec, [{"name": "out", "dtype": "float32", "shape": ("n",)}])
    model = load_neuropod(os.path.join(work, "py_addition"))
    sys.path.insert(0, source)
    direct = importlib.import_module("bench_adder").get_model(None)
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
    result.extra = {"overhead us/call": difference(samples, "neuropods", "callable directly")["median"]}
    result.met = result.extra["overhead us/call"] <= 10.0
    return [result]
