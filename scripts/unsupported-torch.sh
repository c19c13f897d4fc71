#!/usr/bin/env bash
# Prints a folder holding a real torch release that no TorchScript backend
# was built for (`pip install --no-deps --target`, made once under
# $NEUROPODS_HOME/frameworks), for tests/test_torch_versions.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
version=2.14.1
dir="$NEUROPODS_HOME/frameworks/torch-$version-target"
if [ ! -f "$dir/.complete" ]; then
  rm -rf "$dir"
  "$VENV/bin/python" -m pip install -q --no-deps --target "$dir" "torch==$version" >&2
  touch "$dir/.complete"
fi
echo "$dir"
