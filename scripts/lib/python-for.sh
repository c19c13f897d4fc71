#!/usr/bin/env bash
# Usage: scripts/python-for.sh 3.X
# Prints the CPython 3.X interpreter that wheels are built and tested with:
# the venv's python for 3.11, else pyenv's newest 3.X.
set -euo pipefail
source "$(dirname "$0")/../env.sh"
version="$1"
if [ "$version" = "$(python_version "$VENV/bin/python")" ]; then
  echo "$VENV/bin/python"
  exit 0
fi
patch="$(pyenv versions --bare | grep -E "^${version//./\\.}\.[0-9]+$" | sort -V | tail -1 || true)"
if [ -z "$patch" ]; then
  echo "no CPython $version under pyenv (pyenv install $version)" >&2
  exit 1
fi
echo "$(pyenv root)/versions/$patch/bin/python$version"
