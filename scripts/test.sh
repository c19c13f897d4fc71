#!/usr/bin/env bash
# Runs every test: the house rules (cargo fmt --check, clippy -D warnings,
# cargo doc -D warnings, mypy --strict, stubtest of the native module),
# cargo tests of the Rust crates, then pytest against the installed package,
# then the release wheels in fresh venvs (scripts/test-matrix.sh --ci).
# Sets up whatever is missing first (the venv: scripts/venv.sh; the build:
# scripts/build.sh), so it runs on a fresh machine and right after a change.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
source scripts/env.sh
# The house rules, before anything is built: formatting, lints, docs.
bash scripts/tf-pkgconfig.sh > /dev/null
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
bash scripts/build.sh
# Types: mypy --strict on python/ (pyproject.toml's [tool.mypy]), and the
# native module's stub checked against the module as built.
"$VENV/bin/python" -m mypy
"$VENV/bin/python" -m mypy.stubtest neuropods_native._native
package_dir() {
  "$VENV/bin/python" -c "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('$1').origin))"
}
TORCH_DIR="$(package_dir torch)"
TF_DIR="$(package_dir tensorflow)"
ORT_DIR="$(package_dir onnxruntime)/capi"
# Rust test binaries and examples link the frameworks but have no rpath to
# them; NEUROPODS_LIBTORCH_DIR / NEUROPODS_TENSORFLOW_DIR also let the core
# preload them. (Not LIBTORCH: torch-sys's build script watches it, and
# setting it here would rebuild torch-sys on every run.)
export NEUROPODS_LIBTORCH_DIR="$TORCH_DIR/lib"
export NEUROPODS_TENSORFLOW_DIR="$TF_DIR"
# The ONNX backend opens libonnxruntime.so itself; installed wheels find the
# onnxruntime wheel's, Rust test binaries are told where it is.
export NEUROPODS_ONNXRUNTIME_DIR="$ORT_DIR"
export LD_LIBRARY_PATH="$TORCH_DIR/lib:$TF_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The interpreter Rust programs embed for python-platform models.
export NEUROPODS_PYTHON="$VENV/bin/python"
cargo test --release --workspace --exclude neuropods-py
# A real torch release no TorchScript backend is built for, for
# tests/test_torch_versions.py.
export NEUROPODS_TEST_UNSUPPORTED_TORCH="$(bash scripts/unsupported-torch.sh)"
"$VENV/bin/python" -m pytest tests "$@"
# The release wheels as users install them: fresh venvs per torch release
# and for CPython 3.12 (the CI part of the matrix; without --ci, all of it).
bash scripts/test-matrix.sh --ci
