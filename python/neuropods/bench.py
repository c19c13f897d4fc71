"""The benchmark engine of `neuropods bench`: inputs made from a model's
spec, called from many threads for a fixed time, latencies summed up."""

import sys
import threading
import time
from typing import Any, Dict, List

import numpy as np

from neuropods_native import Neuropod as NeuropodModel


def random_inputs(specs: List[Dict[str, Any]], batch: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """Inputs matching `specs`: the first symbol is `batch`, other symbols
    and free dims are 1, each symbol one value everywhere."""
    rng = np.random.default_rng(seed)
    symbols: Dict[str, int] = {}
    inputs = {}
    for spec in specs:
        shape = []
        for dim in spec["shape"]:
            if isinstance(dim, int):
                shape.append(dim)
            elif isinstance(dim, str):
                shape.append(symbols.setdefault(dim, batch if not symbols else 1))
            else:
                shape.append(1)
        dtype = spec["dtype"]
        if dtype == "string":
            words = np.array(["neuropods", "bench", "input", "text"], dtype=object)
            inputs[spec["name"]] = rng.choice(words, size=shape)
        elif dtype == "bool":
            inputs[spec["name"]] = rng.random(shape) < 0.5
        elif dtype.startswith("float"):
            inputs[spec["name"]] = rng.random(shape).astype(dtype)
        else:
            inputs[spec["name"]] = rng.integers(0, 10, size=shape).astype(dtype)
    return inputs


class Progress:
    """One self-rewriting line on stderr while the benchmark runs."""

    def __init__(self, duration: float, enabled: bool):
        self.duration, self.enabled = duration, enabled

    def show(self, elapsed: float, calls: int) -> None:
        if not self.enabled:
            return
        done = min(1.0, elapsed / self.duration) if self.duration > 0 else 1.0
        bar = "#" * int(done * 30)
        sys.stderr.write(f"\r[{bar:<30}] {elapsed:5.1f}/{self.duration:.1f} s, {calls} calls")
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def measure(model: NeuropodModel, *, threads: int, duration: float, batch: int, progress: bool) -> Dict[str, Any]:
    """Calls `model` from `threads` threads for `duration` seconds, after a
    warm-up, with inputs made from its spec (`random_inputs`); returns the
    calls, calls per second and latency percentiles (ms)."""
    inputs = random_inputs(model.inputs, batch)
    warm_until = time.perf_counter() + min(1.0, duration / 5)
    model.infer(inputs)
    while time.perf_counter() < warm_until:
        model.infer(inputs)
    latencies: List[List[float]] = [[] for _ in range(threads)]
    failures: List[BaseException] = []
    stop = threading.Event()
    go = threading.Event()
    deadline = 0.0

    # Each thread stops itself at the deadline: with hundreds of threads the
    # main thread may wait long for the GIL, and must not be what ends the
    # measurement.
    def calls(mine: List[float]) -> None:
        go.wait()
        try:
            while not stop.is_set():
                start = time.perf_counter()
                if start >= deadline:
                    return
                model.infer(inputs)
                mine.append(time.perf_counter() - start)
        except BaseException as e:  # reported by the calling thread
            failures.append(e)
            stop.set()

    workers = [threading.Thread(target=calls, args=(mine,), daemon=True) for mine in latencies]
    for t in workers:
        t.start()
    shown = Progress(duration, enabled=progress)
    started = time.perf_counter()
    deadline = started + duration
    go.set()
    while not stop.is_set():
        elapsed = time.perf_counter() - started
        if elapsed >= duration:
            break
        shown.show(elapsed, sum(len(m) for m in latencies))
        stop.wait(min(0.25, duration - elapsed))
    for t in workers:
        t.join()
    wall = time.perf_counter() - started
    shown.end()
    if failures:
        raise failures[0]
    every = np.array([x for mine in latencies for x in mine]) * 1e3
    return {
        "model": model.name,
        "threads": threads,
        "batch": batch,
        "seconds": round(wall, 3),
        "calls": int(every.size),
        "calls_per_second": every.size / wall,
        "latency_ms": {q: float(np.percentile(every, p)) for q, p in (("p50", 50), ("p90", 90), ("p99", 99))},
    }
