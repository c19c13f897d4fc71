#!/usr/bin/env bash
# The main job, from a fresh machine or a set-up one: sets up whatever is
# missing (scripts/lib/setup.sh), then packages a TorchScript addition model
# and runs it through the public API (examples/addition.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/lib/setup.sh
source scripts/env.sh
"$VENV/bin/python" examples/addition.py "$@"
