#!/usr/bin/env bash
# Builds the backend libraries (for the venv's torch release only: release
# wheels with every release are scripts/build-wheels.sh's job) and the
# Python wheel for the venv's Python, and installs the wheel into the venv
# (tests run against the installed package, as users get it). Cargo and
# maturin rebuild only what changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
source scripts/lib/progress.sh
bash scripts/lib/build-backends.sh "$VENV/bin/python"
rm -rf "$NEUROPODS_HOME/dist"
# maturin's log is shown on failure only.
maturin_quietly() {
  if ! maturin "$@" > "$NEUROPODS_HOME/maturin.log" 2>&1; then
    cat "$NEUROPODS_HOME/maturin.log" >&2
    return 1
  fi
}
CARGO_TARGET_DIR="$(extension_target_dir "$VENV/bin/python")" \
  step "building the wheel (maturin: the extension module)" "3 min cold, seconds after" \
  maturin_quietly build --release --auditwheel skip -i "$VENV/bin/python" --out "$NEUROPODS_HOME/dist"
step "installing the wheel into the venv" "2 s" \
  "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --reinstall --no-deps "$NEUROPODS_HOME"/dist/neuropods-*.whl
