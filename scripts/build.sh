#!/usr/bin/env bash
# Builds the backend libraries and the Python wheel, and installs the wheel
# into the venv (tests run against the installed package, as users get it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/tf-pkgconfig.sh > /dev/null
cargo build --release -p neuropods-torchscript -p neuropods-tensorflow -p neuropods-onnx -p neuropods-python -p neuropods-core --examples --lib --bins
mkdir -p python/neuropods_native/backends
for backend in torchscript tensorflow onnx python; do
  cp "$CARGO_TARGET_DIR/release/libneuropods_$backend.so" python/neuropods_native/backends/
done
# The worker process of out-of-process execution; it finds the backends
# beside itself.
cp "$CARGO_TARGET_DIR/release/neuropods-worker" python/neuropods_native/backends/
rm -rf "$NEUROPODS_HOME/dist"
maturin build --release --auditwheel skip -i "$VENV/bin/python" --out "$NEUROPODS_HOME/dist" 2>&1 | grep -v "^📦\|^🔗\|^🐍" || true
"$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$NEUROPODS_HOME"/dist/neuropods-*.whl
