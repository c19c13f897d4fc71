#!/usr/bin/env bash
# Builds the backend libraries and the Python wheel for the venv's Python,
# and installs the wheel into the venv (tests run against the installed
# package, as users get it). Also builds the Rust examples and the backends
# of the cargo workspace (against the venv's torch), which Rust tests and
# examples open from the target folder.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/build-backends.sh "$VENV/bin/python"
cargo build --release -p neuropods-torchscript -p neuropods-tensorflow -p neuropods-onnx -p neuropods-python -p neuropods-core --examples --lib --bins
rm -rf "$NEUROPODS_HOME/dist"
if ! maturin build --release --auditwheel skip -i "$VENV/bin/python" --out "$NEUROPODS_HOME/dist" \
  > "$NEUROPODS_HOME/maturin.log" 2>&1; then
  cat "$NEUROPODS_HOME/maturin.log" >&2
  exit 1
fi
"$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$NEUROPODS_HOME"/dist/neuropods-*.whl
