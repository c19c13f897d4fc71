"""Runs one group of cases in this (fresh) process and writes its results
as JSON: `python -m suite.group NAME OUT.json ROUNDS CALLS QUICK`.

Each group gets its own process so that one framework's thread pools and
allocations do not colour another's figures."""

import dataclasses
import importlib
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .harness import Settings  # noqa: E402


def main() -> None:
    name, out, rounds, calls, quick = sys.argv[1:6]
    settings = Settings(rounds=int(rounds), calls=int(calls), quick=quick == "1")
    module = importlib.import_module(f"suite.{name}")
    with tempfile.TemporaryDirectory(prefix="neuropods-bench-") as work:
        results = module.run(settings, work)
    with open(out, "w") as f:
        json.dump([dataclasses.asdict(r) for r in results], f)


if __name__ == "__main__":
    main()
