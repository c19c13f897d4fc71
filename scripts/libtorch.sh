#!/usr/bin/env bash
# Usage: scripts/libtorch.sh VERSION   (e.g. 2.11.0)
# Prints a folder holding torch VERSION's headers and the few libraries a
# backend links against (include/, lib/, version.py: the layout tch's
# LIBTORCH expects), made once from the torch wheel on PyPI and kept under
# $NEUROPODS_HOME/frameworks. Only headers and link libraries are taken:
# at run time the backend uses the torch the user installed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
version="$1"
frameworks="$NEUROPODS_HOME/frameworks"
dir="$frameworks/libtorch-$version"
if [ ! -f "$dir/.complete" ]; then
  wheel=$(bash scripts/framework-wheel.sh torch "$version")
  rm -rf "$dir" "$dir.partial"
  mkdir -p "$dir.partial"
  unzip -q "$wheel" 'torch/include/*' 'torch/version.py' 'torch/lib/libc10.so' \
    'torch/lib/libtorch.so' 'torch/lib/libtorch_cpu.so' 'torch/lib/libgomp.so.1' -d "$dir.partial"
  mv "$dir.partial/torch" "$dir"
  rmdir "$dir.partial"
  touch "$dir/.complete"
fi
echo "$dir"
