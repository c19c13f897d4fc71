#!/usr/bin/env bash
# Builds the backend libraries and the Python wheel, and installs the wheel
# into the venv (tests run against the installed package, as users get it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release -p neuropods-torchscript -p neuropods-core --examples --lib
mkdir -p python/neuropods_native/backends
cp "$CARGO_TARGET_DIR/release/libneuropods_torchscript.so" python/neuropods_native/backends/
rm -rf "$NEUROPODS_HOME/dist"
maturin build --release --auditwheel skip -i "$VENV/bin/python" --out "$NEUROPODS_HOME/dist" 2>&1 | grep -v "^📦\|^🔗\|^🐍" || true
"$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$NEUROPODS_HOME"/dist/neuropods-*.whl
