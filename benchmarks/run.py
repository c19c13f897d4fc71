"""Runs the Neuropods benchmark suite and writes benchmarks/results.md,
results.json and results.png (see benchmarks/README.md).

    python benchmarks/run.py                 # full run (about 10 minutes)
    python benchmarks/run.py --quick         # few iterations, as CI runs it
    python benchmarks/run.py --only threads,serialization --out /tmp/bench

Every group of cases runs in its own fresh process."""

import argparse
import datetime
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from suite import report  # noqa: E402
from suite.harness import run_child  # noqa: E402

GROUPS = ["torchscript", "tensorflow", "onnx_platform", "python_platform", "serialization", "memory", "threads", "cold", "ope", "serving", "ray_data"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few iterations: checks the suite runs, not the numbers")
    parser.add_argument("--out", default=HERE, help="folder for results.md/json/png (default: benchmarks/)")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups of {GROUPS}")
    parser.add_argument("--rounds", type=int, help="rounds per comparison (default 30, quick 3)")
    args = parser.parse_args()
    groups = [g for g in args.only.split(",") if g]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown group(s) {unknown}; known: {GROUPS}")
    rounds = args.rounds or (3 if args.quick else 30)
    calls = 100 if args.quick else 1000
    rows = []
    with tempfile.TemporaryDirectory(prefix="neuropods-bench-") as scratch:
        for group in groups:
            print(f"[{group}]", flush=True)
            out = os.path.join(scratch, f"{group}.json")
            try:
                run_child("group", group, out, str(rounds), str(calls), "1" if args.quick else "0")
            except RuntimeError as e:
                sys.exit(str(e))
            with open(out) as f:
                group_rows = json.load(f)
            for row in group_rows:
                ratio = "" if row["ratio"] is None else f" ratio {row['ratio']['median']:.3f}"
                extra = "".join(f"; {key} {value:.3g}" for key, value in row["extra"].items())
                print(f"  {row['title']}: {row['neuropods_label']} {row['neuropods']['median']:.3g}"
                      f" vs {row['other_label']} {row['other']['median']:.3g} {row['unit']}{ratio}{extra}")
            rows += group_rows
    meta = {
        "quick": args.quick,
        "rounds": rounds,
        "calls": calls,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": report.machine(),
    }
    report.write_all(args.out, rows, meta)
    print(f"wrote {', '.join(os.path.join(args.out, 'results.' + e) for e in ('md', 'json', 'png'))}")


if __name__ == "__main__":
    main()
