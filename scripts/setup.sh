#!/usr/bin/env bash
# One-time set-up on a fresh machine: a venv with numpy, torch==2.13.0,
# maturin and pytest, then builds and installs neuropods into it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements-dev.txt
bash scripts/build.sh
