#!/usr/bin/env bash
# Usage: scripts/build-backends.sh [PYTHON]
# Builds what the wheel carries beside its extension module into
# python/neuropods_native/backends (maturin packs that folder):
# - the TorchScript backend once per supported torch release, against that
#   release's headers (scripts/libtorch.sh): libneuropods_torchscript-torchX.Y.so,
#   of which the core opens the one matching the installed torch;
# - the TensorFlow and ONNX backends, and the worker executable;
# - the Python backend, for PYTHON's version (default: the venv's python).
# Needs cargo, a C++ compiler and PyPI (framework wheels, downloaded once
# into $NEUROPODS_HOME/frameworks); no framework needs to be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
python="${1:-$VENV/bin/python}"
# Each supported torch release, and the backend crate whose tch speaks it.
TORCH_BUILDS=(
  "2.11.0 crates/neuropods-torchscript/tch-0.24/Cargo.toml"
  "2.12.0 crates/neuropods-torchscript/tch-0.24/Cargo.toml"
  "2.13.0 crates/neuropods-torchscript/Cargo.toml"
)
backends=python/neuropods_native/backends
rm -rf "$backends"
mkdir -p "$backends"
for build in "${TORCH_BUILDS[@]}"; do
  read -r version manifest <<< "$build"
  # One target folder per release: the releases' torch-sys builds differ.
  target="$NEUROPODS_HOME/target-torch-$version"
  LIBTORCH="$(bash scripts/libtorch.sh "$version")" LIBTORCH_BYPASS_VERSION_CHECK=1 \
    LIBTORCH_CXX11_ABI=1 CARGO_TARGET_DIR="$target" env -u LIBTORCH_USE_PYTORCH \
    cargo build --release --quiet --manifest-path "$manifest" --lib
  cp "$target/release/libneuropods_torchscript.so" "$backends/libneuropods_torchscript-torch${version%.*}.so"
done
bash scripts/tf-pkgconfig.sh > /dev/null
cargo build --release --quiet -p neuropods-tensorflow -p neuropods-onnx --lib
cargo build --release --quiet -p neuropods-core --bin neuropods-worker
for backend in tensorflow onnx; do
  cp "$CARGO_TARGET_DIR/release/libneuropods_$backend.so" "$backends/"
done
# The worker of out-of-process execution; it finds the backends beside itself.
cp "$CARGO_TARGET_DIR/release/neuropods-worker" "$backends/"
# The Python backend embeds the interpreter it runs in: one build per
# Python version.
python_target="$(python_target_dir "$python")"
PYO3_PYTHON="$python" CARGO_TARGET_DIR="$python_target" \
  cargo build --release --quiet -p neuropods-python --lib
cp "$python_target/release/libneuropods_python.so" "$backends/"
