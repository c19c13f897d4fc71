#!/usr/bin/env bash
# The reliability tools of docs/reliability.md (the tests themselves run in
# scripts/test.sh). Sets up whatever is missing first (scripts/lib/setup.sh).
#
#   bash scripts/reliability.sh          # leak check (100,000 calls per platform)
#                                        # and 60 s of fuzzing per target (nightly, cargo-fuzz)
#   bash scripts/reliability.sh --quick  # a short leak check, and the fuzz targets
#                                        # only built (stable): CI, so neither rots
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/lib/setup.sh
source scripts/env.sh
if [ "${1:-}" = "--quick" ]; then
  "$VENV/bin/python" reliability/leaks.py --calls 2000 --warmup 200
  cargo check --manifest-path fuzz/Cargo.toml --bins
else
  "$VENV/bin/python" reliability/leaks.py
  bash scripts/fuzz.sh 60
fi
