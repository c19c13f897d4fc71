#!/usr/bin/env bash
# Runs the benchmarks: the core's criterion benches, then the suite that
# compares Neuropods with the frameworks' own Python APIs
# (benchmarks/run.py). Sets up whatever is missing first (scripts/lib/setup.sh).
#
#   bash scripts/bench.sh            # full: writes benchmarks/results.{md,json,png}
#                                    # and benchmarks/criterion.txt (~15 min)
#   bash scripts/bench.sh --quick    # few iterations, results in a temp folder:
#                                    # checks that every benchmark still runs (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/lib/setup.sh
source scripts/env.sh
# The serving benchmarks' load generator (the workspace's default members,
# as scripts/test.sh builds them: nothing is compiled again after it).
cargo build --release --example loadgen
if [ "${1:-}" = "--quick" ]; then
  # Criterion's test mode: every bench once.
  cargo test --release --benches
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
  "$VENV/bin/python" benchmarks/run.py --quick --out "$out"
else
  cargo bench --benches 2>&1 | tee benchmarks/criterion.txt
  "$VENV/bin/python" benchmarks/run.py
fi
