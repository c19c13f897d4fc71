"""Case 8: throughput of one shared model called from 1, 2 and 4 Python
threads at once, Neuropods vs the same TorchScript module called from the
same threads. Both release the GIL while the model runs; each call uses one
intra-op thread on both sides, so the threads' calls can run on separate
cores."""

import os
import threading
from typing import Callable, List

import numpy as np
import torch

from neuropods.loader import load_neuropod

from .harness import Comparison, Settings, interleave, summary
from .torchscript import MLP_WIDTH, package_mlp

THREAD_COUNTS = (1, 2, 4)
BATCH = 8


def from_threads(call: Callable[[], None], threads: int, setup: Callable[[], None] = lambda: None) -> Callable[[int], None]:
    """Runs `call` n times in all, shared out over `threads` new threads,
    each of which runs `setup` first."""

    def run(n: int) -> None:
        per_thread = max(1, n // threads)

        def work() -> None:
            setup()
            for _ in range(per_thread):
                call()

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    return run


def run(settings: Settings, work: str) -> List[Comparison]:
    path = package_mlp(work)
    model = load_neuropod(path, intra_op_threads=1)
    module = torch.jit.load(os.path.join(path, "0", "data", "model.pt"))
    x = np.random.default_rng(0).standard_normal((BATCH, MLP_WIDTH), dtype=np.float32)

    def neuropods() -> None:
        model.infer({"x": x})

    def torch_jit() -> None:
        with torch.inference_mode():
            module(torch.from_numpy(x))["out"].numpy()

    sides = {}
    for threads in THREAD_COUNTS:
        sides[f"neuropods, {threads} thread(s)"] = from_threads(neuropods, threads)
        # torch's thread count is per calling thread (OpenMP); Neuropods
        # applies intra_op_threads on each thread itself.
        sides[f"torch.jit, {threads} thread(s)"] = from_threads(torch_jit, threads, lambda: torch.set_num_threads(1))
    # Calls per round: a multiple of every thread count.
    calls = settings.scaled(max(4, settings.calls // 5) // 4 * 4)
    samples = interleave(sides, settings.rounds, calls)
    throughput = {name: [1e6 / us for us in per_call] for name, per_call in samples.items()}
    results = []
    single = summary(throughput["neuropods, 1 thread(s)"])["median"]
    for threads in THREAD_COUNTS:
        ours, theirs = f"neuropods, {threads} thread(s)", f"torch.jit, {threads} thread(s)"
        result = Comparison(
            case="8", title=f"Threads: one shared MLP ({BATCH}x{MLP_WIDTH}), {threads} Python thread(s)",
            unit="calls/s", neuropods_label=ours, neuropods=summary(throughput[ours]),
            other_label=theirs, other=summary(throughput[theirs]),
            ratio=summary([a / b for a, b in zip(throughput[ours], throughput[theirs])]),
            higher_is_better=True,
        )
        result.extra = {"neuropods speed-up over 1 thread": summary(throughput[ours])["median"] / single}
        results.append(result)
    results[0].note = f"{os.cpu_count()} CPU cores: throughput can grow up to that many threads"
    return results
