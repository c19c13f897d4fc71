"""Cases 19 and 20: scoring a dataset on Ray Data with `NeuropodPredictor`,
on a local Ray of this machine's cores: two actors against one (case 19),
and one actor against a plain loop of `infer` over the same batches in this
process (case 20: what Ray costs per batch). Each actor and the loop run
the suite's TorchScript MLP on one intra-op thread, so two actors can use
two cores.

The figure is the rate at which scored rows reach the caller once each
actor's first batch has (rows after those over the time after them):
starting an actor takes Ray 1-2 s on this machine before the predictor's
constructor runs, a cost a real dataset pays once, which would otherwise
swamp a benchmark sized to run in minutes. The whole job's rate, start included, and the
time to the first batch are reported beside it."""

import os
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import ray

from neuropods.loader import load_neuropod
from neuropods.ray import NeuropodPredictor

from .harness import Comparison, Settings, paired, summary
from .torchscript import MLP_WIDTH, package_mlp

BATCH = 1024

# When each batch of scored rows reached the caller, and its rows.
Arrivals = List[Tuple[float, int]]


def timed(batches) -> Tuple[float, Arrivals]:
    started = time.perf_counter()
    arrivals = [(time.perf_counter(), rows) for rows in batches]
    return started, arrivals


def steady_rate(arrivals: Arrivals, workers: int) -> float:
    """Rows per second once every worker's first batch could have arrived:
    after the first `workers` arrivals (two actors finish their first
    batches together; counting the second's rows would flatter them)."""
    start, last = arrivals[workers - 1][0], arrivals[-1][0]
    return sum(rows for _, rows in arrivals[workers:]) / (last - start)


def run(settings: Settings, work: str) -> List[Comparison]:
    path = package_mlp(work)
    batches = 4 if settings.quick else 64
    rows = batches * BATCH
    rounds = settings.rounds if settings.quick else max(3, settings.rounds // 6)
    features = np.random.default_rng(0).standard_normal((rows, MLP_WIDTH), dtype=np.float32)

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        # The input sits in the object store before any side runs (the
        # sides measure scoring, not making the data), in blocks of one
        # batch each, which actors take in turns.
        dataset = ray.data.from_numpy(np.split(features, batches)).materialize()

        def on_ray(actors: int) -> Callable[[], Tuple[float, Arrivals]]:
            def job() -> Tuple[float, Arrivals]:
                scored = dataset.map_batches(
                    NeuropodPredictor,
                    fn_constructor_kwargs={"neuropod_path": path, "column_map": {"data": "x"}, "intra_op_threads": 1},
                    batch_format="numpy", batch_size=BATCH, compute=ray.data.ActorPoolStrategy(size=actors),
                )
                return timed(len(b["out"]) for b in scored.iter_batches(batch_size=None, batch_format="numpy"))

            return job

        def plain_loop() -> Tuple[float, Arrivals]:
            with load_neuropod(path, intra_op_threads=1) as model:
                return timed(
                    len(model.infer({"x": b["data"]})["out"])
                    for b in dataset.iter_batches(batch_size=BATCH, batch_format="numpy")
                )

        sides: Dict[str, Tuple[int, Callable[[], Tuple[float, Arrivals]]]] = {
            "1 actor": (1, on_ray(1)),
            "2 actors": (2, on_ray(2)),
            "plain infer loop": (1, plain_loop),
        }
        steady: Dict[str, List[float]] = {name: [] for name in sides}
        whole: Dict[str, List[float]] = {name: [] for name in sides}
        first: Dict[str, List[float]] = {name: [] for name in sides}
        for _ in range(rounds):
            for name, (workers, job) in sides.items():
                started, arrivals = job()
                assert sum(n for _, n in arrivals) == rows, name
                steady[name].append(steady_rate(arrivals, workers))
                whole[name].append(rows / (arrivals[-1][0] - started))
                first[name].append(arrivals[0][0] - started)
    finally:
        ray.shutdown()

    def extra(*names: str) -> Dict[str, float]:
        figures = {}
        for name in names:
            figures[f"{name}: whole job, start included, rows/s"] = summary(whole[name])["median"]
            figures[f"{name}: first batch after, s"] = summary(first[name])["median"]
        return figures

    title = f"Ray Data, TorchScript MLP ({rows} rows of {MLP_WIDTH}, batches of {BATCH})"
    scaling = paired(
        "19", f"{title}: 2 actors against 1", steady, "2 actors", "1 actor", unit="rows/s",
        higher_is_better=True, target="2 actors >= 1.7x one (ratio >= 1.7)",
        note=f"{os.cpu_count()} CPU cores, which Ray's own processes share with the actors; "
        "rows/s after each actor's first batch (see the group's docstring)",
        extra=extra("2 actors", "1 actor"),
    )
    overhead = paired(
        "20", f"{title}: 1 actor against a plain loop", steady, "1 actor", "plain infer loop", unit="rows/s",
        higher_is_better=True, target="within 10% of the loop (ratio >= 0.9)", extra=extra("plain infer loop"),
    )
    for comparison, goal in ((scaling, 1.7), (overhead, 0.9)):
        assert comparison.ratio is not None
        comparison.met = comparison.ratio["median"] >= goal
    return [scaling, overhead]
