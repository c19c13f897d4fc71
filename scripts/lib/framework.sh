#!/usr/bin/env bash
# Usage: scripts/lib/framework.sh PACKAGE VERSION
# Prints a folder holding PACKAGE==VERSION's CPython 3.11 manylinux x86_64
# wheel installed alone (`--no-deps --target`), made once under
# $NEUROPODS_HOME/frameworks. Builds take a framework's headers and link
# libraries from here, so that building needs no framework installed; tests
# use it for a torch release no backend is built for.
# uv installs it when the venv has uv: from uv's cache, which the venv
# (scripts/lib/venv.sh) and the release matrix's venvs share, so a wheel one
# of them has is not downloaded again, and files are hard links into the
# cache. Else (`pip install .`, in pip's build environment) pip does.
set -euo pipefail
source "$(dirname "$0")/../env.sh"
package="$1"
version="$2"
dir="$NEUROPODS_HOME/frameworks/$package-$version"
if [ ! -f "$dir/.complete" ]; then
  rm -rf "$dir"
  python="${NEUROPODS_BUILD_PYTHON:-$VENV/bin/python}"
  [ -x "$python" ] || python=python3
  if [ -x "$VENV/bin/uv" ]; then
    "$VENV/bin/uv" pip install -q --no-deps --python "$python" --python-version 3.11 \
      --python-platform x86_64-manylinux_2_28 --target "$dir" "$package==$version" >&2
  else
    platforms=()
    for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014; do
      platforms+=(--platform "${tag}_x86_64")
    done
    "$python" -m pip install -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version 3.11 "${platforms[@]}" --target "$dir" "$package==$version" >&2
  fi
  touch "$dir/.complete"
fi
echo "$dir"
