#!/usr/bin/env bash
# The test command: every test of the project against the installed
# package. The house rules (cargo fmt --check, clippy and cargo doc with
# warnings as errors, mypy --strict, stubtest of the native module), the
# cargo tests of the Rust crates, then pytest (arguments go to pytest).
# Sets up whatever is missing first, and rebuilds after a change
# (scripts/lib/setup.sh), so it runs on a fresh machine and right after a
# change. It downloads nothing the main job did not. The release wheels in
# fresh venvs are scripts/test-matrix.sh's job (CI runs both).
#
# Every cargo command here uses the release profile and scripts/env.sh's
# variables, as the main job's build does: build scripts (torch-sys compiles
# libtorch's C++ wrapper, for minutes) run once for all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
# Formatting first: it needs no build, and fails in a second.
PATH="$HOME/.cargo/bin:$PATH" cargo fmt --all --check
bash scripts/lib/setup.sh
source scripts/env.sh
source scripts/lib/progress.sh
step "house rules: cargo clippy -D warnings" "1.5 min cold, seconds after" \
  cargo clippy --release --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" step "house rules: cargo doc -D warnings" "20 s cold, seconds after" \
  cargo doc --release --workspace --no-deps
# Types: mypy --strict on python/ (pyproject.toml's [tool.mypy]), and the
# native module's stub checked against the module as built.
step "house rules: mypy --strict" "30 s cold, seconds after" "$VENV/bin/python" -m mypy
step "house rules: stubtest of the native module" "10 s" "$VENV/bin/python" -m mypy.stubtest neuropods_native._native
# The workspace's default members: every crate but the PyO3 bindings.
step "cargo tests" "1 min" cargo test --release
step "pytest against the installed package" "7 min" "$VENV/bin/python" -m pytest tests "$@"
