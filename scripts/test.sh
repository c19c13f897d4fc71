#!/usr/bin/env bash
# Runs every test: cargo tests of the Rust crates, then pytest against the
# installed package (built by scripts/setup.sh or scripts/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/build.sh
TORCH_DIR="$("$VENV/bin/python" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("torch").origin))')"
# Rust test binaries and examples link libtorch but have no rpath to it.
export LIBTORCH="$TORCH_DIR"
export LD_LIBRARY_PATH="$TORCH_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cargo test --release --workspace --exclude neuropods-py
"$VENV/bin/python" -m pytest tests "$@"
