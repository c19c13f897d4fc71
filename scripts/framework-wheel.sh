#!/usr/bin/env bash
# Usage: scripts/framework-wheel.sh PACKAGE VERSION
# Prints the path of PACKAGE==VERSION's CPython 3.11 manylinux x86_64 wheel,
# downloaded from PyPI once into $NEUROPODS_HOME/frameworks/wheels. Builds
# take the frameworks' headers and link libraries from these wheels, so that
# building needs no framework installed (and no venv).
set -euo pipefail
source "$(dirname "$0")/env.sh"
package="$1"
version="$2"
wheels="$NEUROPODS_HOME/frameworks/wheels"
pattern="$wheels/${package//-/_}-$version-cp311-*manylinux*x86_64.whl"
# shellcheck disable=SC2086
wheel=$(ls $pattern 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
  mkdir -p "$wheels"
  python="${NEUROPODS_BUILD_PYTHON:-$VENV/bin/python}"
  [ -x "$python" ] || python=python3
  platforms=()
  for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014; do
    platforms+=(--platform "${tag}_x86_64")
  done
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    "${platforms[@]}" "$package==$version" -d "$wheels" >&2
  # shellcheck disable=SC2086
  wheel=$(ls $pattern | head -1)
fi
echo "$wheel"
