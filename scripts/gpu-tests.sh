#!/usr/bin/env bash
# Usage: scripts/gpu-tests.sh WHEEL [PYTHON]
# On a machine with CUDA and a supported torch (no Rust, no network needed):
# installs WHEEL (from scripts/build-wheels.sh, for PYTHON's version;
# default python3) into a fresh target folder without the network, then
# runs the tests marked `gpu`, and tests/test_torch_versions.py, against
# it. The tests run in this checkout's tests/ folder; test files that import
# a framework this machine lacks are left out.
set -euo pipefail
cd "$(dirname "$0")/.."
wheel="$(realpath "$1")"
python="${2:-python3}"
target="$(mktemp -d)"
trap 'rm -rf "$target"' EXIT
# numpy and packaging come from the machine's environment.
"$python" -m pip install -q --no-index --no-deps --target "$target" "$wheel"
tests=()
for file in tests/test_*.py; do
  modules=$(grep -h -o -E "^(import|from) (tensorflow|onnx|onnxruntime|tritonclient|mlserver|hypothesis)\b" "$file" \
    | awk '{print $2}' | sort -u)
  missing=false
  for module in $modules; do
    "$python" -c "import $module" 2>/dev/null || missing=true
  done
  $missing || tests+=("$file")
done
echo "running the gpu tests of: ${tests[*]}"
PYTHONPATH="$target" "$python" -m pytest -q -p no:cacheprovider -m gpu "${tests[@]}"
PYTHONPATH="$target" "$python" -m pytest -q -p no:cacheprovider tests/test_torch_versions.py
