"""Cases 10-14: out-of-process execution (`load_neuropod(path,
use_ope=True)`: the model runs in a worker process of its own, tensors
cross in shared memory) against the same package run in-process, both
sides loaded in one caller process and timed in interleaved rounds.

What OPE costs: the added round trip of a call (a tiny model; the
original Neuropod's own OPE benchmark of 100 small inputs), moving 64 MB
in and out, starting a worker, and the memory of a large call, spread
over the caller, the worker and the shared segments between them.

Memory is measured in a fresh process per sample: `python -m suite.ope
SIDE INPUT_BYTES WORK OUT`.
"""

import json
import os
import sys
import tempfile
from typing import Dict, List

import numpy as np

from neuropods.loader import Neuropod, load_neuropod

from .harness import Comparison, Settings, difference, interleave, paired, repeated, run_child, summary
from .memory import INPUT_BYTES, MB, QUICK_INPUT_BYTES, full_array, package, reset_peak_rss, rss_field
from .python_platform import package_python
from .torchscript import package_addition

OPE = "OPE"
OPE_NO_SPIN = "OPE, no polling (NEUROPODS_OPE_SPIN_US=0)"
OPE_ALLOCATED = "OPE, input from allocate"
IN_PROCESS = "in-process"
SPIN_VARIABLE = "NEUROPODS_OPE_SPIN_US"

ADDED_ROUND_TRIP_TARGET_US = 25.0
SMALL_INPUTS, SMALL_SHAPE = 100, (10, 5)
LARGE_BYTES = 64 * MB

# The original Neuropod's OPE benchmark (benchmark_multiprocess.cc,
# benchmark_small_inputs) feeds 100 inputs of 10x5 float32 to a model with
# one output; here the model sums them.
SUM_CODE = """import numpy as np


def get_model(data_root):
    def total(**inputs):
        return {"out": np.add.reduce(list(inputs.values()))}
    return total
"""

POLLING_NOTE = (
    "By default each side of an OPE call polls for the other's message for 100 us before it sleeps "
    f"({SPIN_VARIABLE}); while other processes keep every core busy, the polling side holds the core its "
    f"peer needs, and a round trip can take about twice that. 'No polling' sets {SPIN_VARIABLE}=0."
)

MEMORY_COUNTING = (
    "OPE memory: the caller's and the worker's peak RSS growth over the call (VmHWM, reset just before; "
    "the caller reads all of the output), summed, less the output. Shared-memory pages are in the RSS of "
    "every process that touches them, so pages both touch are counted twice (the output: the worker writes "
    "it, the caller reads it; an allocated input: the caller fills it, the worker reads it): the sum is an "
    "upper bound on the physical memory."
)


def load_without_polling(path: str, **options) -> Neuropod:
    """An OPE model whose caller and worker sleep at once while they wait
    for each other, instead of polling for 100 us first: the caller and
    the worker read the variable when the worker starts."""
    previous = os.environ.get(SPIN_VARIABLE)
    os.environ[SPIN_VARIABLE] = "0"
    try:
        return load_neuropod(path, use_ope=True, **options)
    finally:
        if previous is None:
            del os.environ[SPIN_VARIABLE]
        else:
            os.environ[SPIN_VARIABLE] = previous


def per_call_ms(samples: Dict[str, List[float]]) -> Dict[str, List[float]]:
    return {name: [us / 1e3 for us in per_call] for name, per_call in samples.items()}


def gigabytes_per_second(moved_bytes: int, samples_ms: List[float]) -> float:
    """Median bandwidth over rounds of a call that moves `moved_bytes`."""
    return summary([moved_bytes / (ms * 1e-3) / 1e9 for ms in samples_ms])["median"]


def tiny_round_trip(settings: Settings, path: str) -> List[Comparison]:
    """Case 10: a 4-element add, where the call is almost all overhead;
    with the default polling and without it (see POLLING_NOTE)."""
    x = np.arange(4, dtype=np.float32)
    inputs = {"x": x, "y": x}
    with load_neuropod(path, use_ope=True, intra_op_threads=1) as ope, \
            load_without_polling(path, intra_op_threads=1) as ope_no_spin, \
            load_neuropod(path, intra_op_threads=1) as in_process:
        expected = in_process.infer(inputs)["out"]
        for model in (ope, ope_no_spin):
            np.testing.assert_array_equal(model.infer(inputs)["out"], expected)
        samples = interleave({OPE: repeated(lambda: ope.infer(inputs)),
                              OPE_NO_SPIN: repeated(lambda: ope_no_spin.infer(inputs)),
                              IN_PROCESS: repeated(lambda: in_process.infer(inputs))},
                             settings.rounds, settings.calls)
    results = []
    for side, title in ((OPE, "TorchScript tiny (4-element add)"),
                        (OPE_NO_SPIN, "TorchScript tiny (4-element add), no polling")):
        result = paired("10", title, samples, side, IN_PROCESS, note=POLLING_NOTE)
        result.extra = {"added round trip us/call": difference(samples, side, IN_PROCESS)["median"]}
        results.append(result)
    results[0].target = f"added round trip <= {ADDED_ROUND_TRIP_TARGET_US:.0f} us"
    results[0].met = results[0].extra["added round trip us/call"] <= ADDED_ROUND_TRIP_TARGET_US
    return results


def many_small_inputs(settings: Settings, work: str) -> Comparison:
    """Case 11: the original Neuropod's OPE benchmark, 100 small inputs."""
    names = [f"x{i}" for i in range(SMALL_INPUTS)]
    package_python(os.path.join(work, "py_sum"), os.path.join(work, "sum_src"), "bench_sum", SUM_CODE,
                   [{"name": n, "dtype": "float32", "shape": SMALL_SHAPE} for n in names],
                   [{"name": "out", "dtype": "float32", "shape": SMALL_SHAPE}])
    rng = np.random.default_rng(0)
    inputs = {n: rng.standard_normal(SMALL_SHAPE, dtype=np.float32) for n in names}
    with load_neuropod(os.path.join(work, "py_sum"), use_ope=True) as ope, \
            load_neuropod(os.path.join(work, "py_sum")) as in_process:
        np.testing.assert_allclose(ope.infer(inputs)["out"], in_process.infer(inputs)["out"])
        samples = interleave({OPE: repeated(lambda: ope.infer(inputs)),
                              IN_PROCESS: repeated(lambda: in_process.infer(inputs))},
                             settings.rounds, settings.scaled(settings.calls // 10))
    result = paired("11", f"Python platform, {SMALL_INPUTS} inputs of 10x5 float32, sum", samples, OPE, IN_PROCESS,
                    note="The original Neuropod documents ~100-500 us of OPE overhead per call.")
    result.extra = {"added round trip us/call": difference(samples, OPE, IN_PROCESS)["median"]}
    return result


def large_tensors(settings: Settings, work: str) -> List[Comparison]:
    """Case 12: 64 MB in and 64 MB out, where copies and page faults of
    shared memory dominate; with an input from `allocate` nothing is copied
    on the way in."""
    n = LARGE_BYTES // 4
    x = full_array(n, 1.5, aligned_64=False)
    path = package("torchscript", work)
    with load_neuropod(path, use_ope=True, intra_op_threads=1) as ope, \
            load_neuropod(path, intra_op_threads=1) as in_process:
        allocated = ope.allocate("x", [n])
        allocated[:] = 1.5
        for model, given in ((ope, x), (ope, allocated), (in_process, x)):
            out = model.infer({"x": given})["out"]
            assert out.shape == (n,) and out[0] == 3.0 and out[-1] == 3.0
        del out
        samples = interleave({OPE: repeated(lambda: ope.infer({"x": x})),
                              OPE_ALLOCATED: repeated(lambda: ope.infer({"x": allocated})),
                              IN_PROCESS: repeated(lambda: in_process.infer({"x": x}))},
                             settings.rounds, settings.scaled(3))
    samples = per_call_ms(samples)
    results = []
    for side, input_kind in ((OPE, "numpy input"), (OPE_ALLOCATED, "input from allocate")):
        result = paired("12", f"TorchScript x * 2, 64 MB in and out, {input_kind}", samples, side, IN_PROCESS,
                        unit="ms/call")
        result.extra = {"OPE GB/s (in + out)": gigabytes_per_second(2 * LARGE_BYTES, samples[side]),
                        "added ms/call": difference(samples, side, IN_PROCESS)["median"]}
        results.append(result)
    return results


def load_and_close(settings: Settings, path: str) -> Comparison:
    """Case 13: a fresh model per sample; for OPE that is a worker started
    (libtorch loaded in it) and stopped."""
    samples = interleave({OPE: repeated(lambda: load_neuropod(path, use_ope=True).close()),
                          IN_PROCESS: repeated(lambda: load_neuropod(path).close())},
                         settings.rounds, settings.scaled(3))
    return paired("13", "Load + close, TorchScript 4-element add, warm process", per_call_ms(samples), OPE, IN_PROCESS,
                  unit="ms")


def child(side: str, input_bytes: int, work: str, out: str) -> None:
    """One memory sample (see MEMORY_COUNTING): a fresh process, the model
    warmed up, then one call on `input_bytes` of input."""
    model = load_neuropod(package("torchscript", work), use_ope=side != IN_PROCESS)
    model.infer({"x": np.ones(1024, dtype=np.float32)})  # warm-up: worker, kernels, pools
    n = input_bytes // 4
    if side == OPE_ALLOCATED:
        x = model.allocate("x", [n])
        x[:] = 1.5
    else:
        x = full_array(n, 1.5, aligned_64=False)
    processes = {"caller": "self"}
    if model.worker_pid is not None:
        processes["worker"] = str(model.worker_pid)
    before = {who: rss_field("VmRSS", pid) for who, pid in processes.items()}
    for pid in processes.values():
        reset_peak_rss(pid)
    result = model.infer({"x": x})["out"]
    assert result.max() == 3.0  # reads all of the output, as a caller would
    growth = {who: rss_field("VmHWM", pid) - before[who] for who, pid in processes.items()}
    assert result.shape == x.shape and result[0] == 3.0
    with open(out, "w") as f:
        json.dump({"extra_bytes": sum(growth.values()) - result.nbytes,
                   "caller_bytes": growth["caller"] - result.nbytes, "worker_bytes": growth.get("worker", 0)}, f)
    model.close()


def peak_memory(settings: Settings, work: str) -> List[Comparison]:
    """Case 14: peak memory of one large call, OPE vs in-process."""
    input_bytes = QUICK_INPUT_BYTES if settings.quick else INPUT_BYTES
    sides = [OPE, OPE_ALLOCATED, IN_PROCESS]
    samples: Dict[str, Dict[str, List[float]]] = {side: {} for side in sides}
    for _ in range(1 if settings.quick else 3):
        for side in sides:
            scratch = tempfile.mkdtemp(dir=work)
            out = os.path.join(scratch, "memory.json")
            run_child("ope", side, str(input_bytes), scratch, out)
            with open(out) as f:
                for key, value in json.load(f).items():
                    samples[side].setdefault(key, []).append(value / MB)
    results = []
    for side in (OPE, OPE_ALLOCATED):
        result = Comparison(
            case="14", title=f"Peak memory beyond input and output, TorchScript, {input_bytes // MB} MB, "
            + ("numpy input" if side == OPE else "input from allocate"),
            unit="MB", neuropods_label=side, neuropods=summary(samples[side]["extra_bytes"]),
            other_label=IN_PROCESS, other=summary(samples[IN_PROCESS]["extra_bytes"]), ratio=None,
            note=MEMORY_COUNTING,
        )
        result.extra = {"caller MB beyond output": summary(samples[side]["caller_bytes"])["median"],
                        "worker peak growth MB": summary(samples[side]["worker_bytes"])["median"]}
        results.append(result)
    return results


def run(settings: Settings, work: str) -> List[Comparison]:
    addition = package_addition(work)
    return [*tiny_round_trip(settings, addition), many_small_inputs(settings, work), *large_tensors(settings, work),
            load_and_close(settings, addition), *peak_memory(settings, work)]


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
