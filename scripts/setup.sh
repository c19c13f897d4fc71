#!/usr/bin/env bash
# Set-up: the venv (scripts/venv.sh: skipped when up to date), then builds
# the backends and the wheel and installs it (scripts/build.sh: cargo and
# maturin rebuild only what changed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
bash scripts/build.sh
