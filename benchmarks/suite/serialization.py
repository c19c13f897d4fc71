"""Case 6: `serialize` / `deserialize` of one float32 tensor at 1 KB, 1 MB
and 64 MB vs pickle (protocol 5, in-band), `np.save` / `np.load` on a
BytesIO, and `np.copyto` into a ready buffer: the physical limit of any
serializer that copies the payload once. `ndarray.copy` (a new array, then
the copy) is the limit for one that returns new memory, as `serialize`
does: the kernel must first fault in and zero the new pages."""

import io
import pickle
from typing import Callable, Dict, List

import numpy as np

import neuropods_native

from .harness import Comparison, Settings, interleave, paired

SIZES = {"1 KB": 1 << 10, "1 MB": 1 << 20, "64 MB": 64 << 20}
# Calls per round at each size in the full run (the quick run takes a tenth).
CALLS = {"1 KB": 2000, "1 MB": 100, "64 MB": 4}


def serialize_sides(array: np.ndarray) -> Dict[str, Callable[[int], None]]:
    destination = np.empty_like(array)

    def neuropods(n: int) -> None:
        for _ in range(n):
            neuropods_native.serialize(array)

    def pickle5(n: int) -> None:
        for _ in range(n):
            pickle.dumps(array, protocol=5)

    def np_save(n: int) -> None:
        for _ in range(n):
            np.save(io.BytesIO(), array)

    def copy(n: int) -> None:
        for _ in range(n):
            np.copyto(destination, array)

    def new_copy(n: int) -> None:
        for _ in range(n):
            array.copy()

    return {"neuropods": neuropods, "pickle 5": pickle5, "np.save": np_save, "np.copyto": copy,
            "ndarray.copy": new_copy}


def deserialize_sides(array: np.ndarray) -> Dict[str, Callable[[int], None]]:
    ours = neuropods_native.serialize(array)
    pickled = pickle.dumps(array, protocol=5)
    saved = io.BytesIO()
    np.save(saved, array)
    saved = saved.getvalue()
    destination = np.empty_like(array)
    assert np.array_equal(neuropods_native.deserialize(ours), array)

    def neuropods(n: int) -> None:
        for _ in range(n):
            neuropods_native.deserialize(ours)

    def unpickle(n: int) -> None:
        for _ in range(n):
            pickle.loads(pickled)

    def np_load(n: int) -> None:
        for _ in range(n):
            np.load(io.BytesIO(saved))

    def copy(n: int) -> None:
        for _ in range(n):
            np.copyto(destination, array)

    return {"neuropods": neuropods, "pickle 5": unpickle, "np.load": np_load, "np.copyto": copy}


def run(settings: Settings, work: str) -> List[Comparison]:
    results = []
    for size_name, size in SIZES.items():
        array = np.random.default_rng(0).standard_normal(size // 4, dtype=np.float32)
        calls = settings.scaled(CALLS[size_name])
        for direction, sides in (("serialize", serialize_sides(array)), ("deserialize", deserialize_sides(array))):
            samples = interleave(sides, settings.rounds, calls)
            for other in sides:
                if other == "neuropods":
                    continue
                result = paired("6", f"{direction} {size_name} float32", samples, "neuropods", other)
                if size_name == "64 MB" and direction == "serialize" and other == "np.copyto":
                    # >= 80% of copy bandwidth: at most 1.25x the copy's time.
                    result.target = ">= 80% of copy bandwidth (ratio <= 1.25)"
                    result.met = result.ratio["median"] <= 1.25
                    result.note = (
                        "serialize returns a new bytes object: its pages are faulted in and zeroed by the kernel "
                        "before the copy (huge pages make that cheaper), which np.copyto into a ready buffer "
                        "does not pay; compare ndarray.copy, which does."
                    )
                if size_name == "64 MB" and direction == "deserialize" and other == "np.copyto":
                    result.target = "<= 20 us per call (no copy of the payload)"
                    result.met = result.neuropods["median"] <= 20.0
                if other in ("np.copyto", "ndarray.copy"):
                    result.extra = {
                        "neuropods GB/s": size / result.neuropods["median"] / 1e3,
                        f"{other} GB/s": size / result.other["median"] / 1e3,
                    }
                results.append(result)
    return results
