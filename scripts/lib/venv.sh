#!/usr/bin/env bash
# The venv with what building and testing need (requirements-dev.txt),
# made or brought up to date only when needed: the install runs when the
# venv is new or requirements-dev.txt changed since its last complete
# install (a checksum kept in the venv), so a set-up machine skips this in a
# moment. uv installs it (pip only installs uv): it downloads in parallel,
# and its cache (~/.cache/uv) is the one scripts/lib/framework.sh and the
# release matrix's venvs install from, so a framework wheel is downloaded
# once for all of them.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
source scripts/lib/progress.sh
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.requirements-dev.sha256"
wanted="$(sha256sum requirements-dev.txt | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  uv_pin="$(grep -E '^uv==' requirements-dev.txt)"
  step "installing $uv_pin into the venv with pip" "10 s" \
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$uv_pin"
  # torch's CUDA build (PyPI has no other for Linux) brings about 3 GB of
  # nvidia-* wheels; the whole download is about 7 GB.
  step "installing requirements-dev.txt into $VENV with uv" "under a minute here on a cold cache: a 7 GB download" \
    "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" -r requirements-dev.txt
  echo "$wanted" > "$stamp"
fi
