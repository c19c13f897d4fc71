#!/usr/bin/env bash
# The venv with what building and testing need (requirements-dev.txt),
# made or brought up to date only when needed: pip runs when the venv is
# new or requirements-dev.txt changed since its last complete install (a
# checksum kept in the venv), so a set-up machine skips this in a moment.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.requirements-dev.sha256"
wanted="$(sha256sum requirements-dev.txt | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements-dev.txt
  echo "$wanted" > "$stamp"
fi
