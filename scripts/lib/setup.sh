#!/usr/bin/env bash
# Set-up: the venv (scripts/lib/venv.sh: skipped when up to date), then the
# backends and the wheel, built and installed (scripts/lib/build.sh: cargo
# and maturin rebuild only what changed).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/lib/venv.sh
bash scripts/lib/build.sh
