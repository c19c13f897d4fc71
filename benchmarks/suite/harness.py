"""Timing and result records shared by every case of the suite.

The two (or more) sides of a comparison run in the same process, one round
of each in turn, so that drift of a shared machine (frequency, neighbours)
hits all of them alike. A ratio is taken per round, between samples taken
moments apart, and then summarised; that is steadier than a ratio of
medians taken minutes apart.
"""

import dataclasses
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

BENCHMARKS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Settings:
    """How long to measure: `rounds` samples per side, each the mean of
    `calls` calls, after one warm-up round."""

    rounds: int
    calls: int
    quick: bool

    def scaled(self, calls: int) -> int:
        """Calls per round for a case whose call costs more than a tiny one:
        the full run uses `calls`, the quick one a tenth of it (at least 1)."""
        return max(1, calls // 10) if self.quick else calls


def summary(samples: List[float]) -> Dict[str, float]:
    """Median and spread (quartiles, extremes) of repeated samples."""
    ordered = sorted(samples)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {
        "median": statistics.median(ordered),
        "q1": q1,
        "q3": q3,
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
    }


def interleave(sides: Dict[str, Callable[[int], None]], rounds: int, calls: int) -> Dict[str, List[float]]:
    """Runs each side `calls` times per round, the sides in turn, `rounds`
    times after one warm-up round. Returns microseconds per call, one sample
    per round, for each side."""
    for run in sides.values():
        run(calls)
    samples: Dict[str, List[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, run in sides.items():
            start = time.perf_counter()
            run(calls)
            samples[name].append((time.perf_counter() - start) / calls * 1e6)
    return samples


def repeated(step: Callable[[], object]) -> Callable[[int], None]:
    """A side for `interleave` that calls `step` n times."""

    def run_n(n: int) -> None:
        for _ in range(n):
            step()

    return run_n


def difference(samples: Dict[str, List[float]], ours: str, theirs: str) -> Dict[str, float]:
    """Summary of what `ours` adds to `theirs`, taken round by round (as
    the ratio is): the cost of a layer over what it wraps."""
    return summary([a - b for a, b in zip(samples[ours], samples[theirs])])


@dataclasses.dataclass
class Comparison:
    """One row of the report: Neuropods against one alternative.

    `ratio` is Neuropods' figure over the alternative's (so for times, < 1
    means Neuropods is faster; None where only the figures themselves
    mean something); `higher_is_better` says which way the figures point
    (times and memory: lower; throughput: higher); `target` is the goal in words and `met`
    whether the measured figure reaches it (None where no target is set).
    """

    case: str
    title: str
    unit: str
    neuropods_label: str
    neuropods: Dict[str, float]
    other_label: str
    other: Dict[str, float]
    ratio: Optional[Dict[str, float]]
    higher_is_better: bool = False
    target: str = ""
    met: Optional[bool] = None
    note: str = ""
    extra: Dict[str, float] = dataclasses.field(default_factory=dict)


def paired(
    case: str,
    title: str,
    samples: Dict[str, List[float]],
    ours: str,
    theirs: str,
    unit: str = "us/call",
    **fields,
) -> Comparison:
    """A comparison of two interleaved sides, ratio taken round by round."""
    ratios = [a / b for a, b in zip(samples[ours], samples[theirs])]
    return Comparison(
        case=case,
        title=title,
        unit=unit,
        neuropods_label=ours,
        neuropods=summary(samples[ours]),
        other_label=theirs,
        other=summary(samples[theirs]),
        ratio=summary(ratios),
        **fields,
    )


def run_child(module: str, *args: str) -> None:
    """Runs `python -m suite.MODULE ARGS...` in a fresh process, from the
    benchmarks folder; a failure raises with the child's stderr."""
    done = subprocess.run(
        [sys.executable, "-m", f"suite.{module}", *args],
        cwd=BENCHMARKS_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"suite.{module} {' '.join(args)} failed:\n{done.stderr[-4000:]}")
