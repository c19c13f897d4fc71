#!/usr/bin/env bash
# Usage: scripts/test-matrix.sh [--ci] [WHEELS_DIR]
# Tests the release wheels as users install them: each case is a fresh
# venv holding one wheel, one torch and one TensorFlow release and the test
# tools, and no variable from scripts/env.sh; then the tests run against it.
# Wheels come from WHEELS_DIR, else scripts/build-wheels.sh builds them.
#
# The full matrix (this command without --ci), each case with the test
# files of every platform but ONNX (whose tests scripts/test.sh runs):
#   CPython 3.11: torch 2.11.0, 2.12.0, 2.12.1 and 2.13.0 with TF 2.21, and
#     torch 2.13.0 with TF 2.20 (2.12.0 runs the build made against 2.12.1's
#     headers, the wheel --ci's venv installs: patch releases keep
#     libtorch's ABI);
#   CPython 3.10, 3.12 and 3.13: torch 2.13.0 with TF 2.21.
# --ci (what .ci/run runs, to fit its time): torch 2.11.0, 2.12.1, 2.13.0
# and TF 2.20 on 3.11, and 3.12.
#
# Venvs are made by uv, which links the framework wheels from its cache
# (~/.cache/uv, outside the clone, shared with the dev venv and the builds'
# framework files): a venv with torch takes seconds once its wheels are
# there. A cold cache downloads about 11 GB more than the dev venv's: torch
# 2.11.0 and 2.12.1 with their CUDA wheels, TF 2.20, torch 2.14.1 (no deps)
# and CPython 3.12's torch and TF.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ci=false
if [ "${1:-}" = "--ci" ]; then
  ci=true
  shift
fi
repo="$PWD"
wheels="${1:-}"
if [ -z "$wheels" ]; then
  if $ci; then
    wheels="$(bash scripts/build-wheels.sh "$(bash scripts/lib/python-for.sh 3.11)" "$(bash scripts/lib/python-for.sh 3.12)")"
  else
    wheels="$(bash scripts/build-wheels.sh)"
  fi
fi
unsupported_torch="$(bash scripts/lib/unsupported-torch.sh)"

# The tests these venvs run: every test file but ONNX's (it needs the
# exporter's packages) and the server's (its clients). conftest.py imports
# torch, and tests across platforms make TensorFlow and ONNX models, so
# every venv has torch, TensorFlow and ONNX Runtime (the `onnx` extra's
# ranges: the dev venv's pins have no CPython 3.10 wheels).
mapfile -t tests < <(grep -L -E "^(import|from) (onnx|onnxruntime|tritonclient|mlserver)\b" tests/test_*.py)

# case: python version, torch version, tensorflow-cpu version
cases=(
  "3.11 2.11.0 2.21.0"
  "3.11 2.12.1 2.21.0"
  "3.11 2.13.0 2.21.0"
  "3.11 2.13.0 2.20.0"
  "3.12 2.13.0 2.21.0"
)
if ! $ci; then
  cases+=(
    "3.11 2.12.0 2.21.0"
    "3.10 2.13.0 2.21.0"
    "3.13 2.13.0 2.21.0"
  )
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()

# `pip install .` from this checkout into a fresh venv (with pip's build
# isolation and the PEP 517 backend in build_backend/), then the main job.
# The venv's path is always the same, so that cargo's builds for its
# Python (keyed by the interpreter's path) are reused from run to run.
echo "=== pip install . into a fresh CPython 3.11 venv"
pip_venv="$NEUROPODS_HOME/pip-install-venv"
rm -rf "$pip_venv"
"$VENV/bin/uv" venv -q --seed --python "$VENV/bin/python" "$pip_venv"
"$VENV/bin/uv" pip install -q --python "$pip_venv/bin/python" torch==2.13.0
if ! (cd "$work" && env -i HOME="$HOME" PATH="$pip_venv/bin:$HOME/.cargo/bin:/usr/bin:/bin" \
    TMPDIR="${TMPDIR:-/tmp}" sh -c "python -m pip install -q '$repo' && python '$repo/examples/addition.py'"); then
  failed+=("pip-install")
fi
rm -rf "$pip_venv"

for case in "${cases[@]}"; do
  read -r python_version torch_version tf_version <<< "$case"
  name="cp${python_version/./}-torch$torch_version-tf$tf_version"
  tag="cp${python_version/./}"
  wheel="$(ls "$wheels"/neuropods-*-"$tag"-"$tag"-*.whl)"
  venv="$work/$name"
  echo "=== $name: $(basename "$wheel")"
  # pip: users' venvs have it, and the requirements check falls back to
  # its vendored `packaging`.
  requirements=("$wheel" "torch==$torch_version" "tensorflow-cpu==$tf_version" "onnxruntime>=1.17"
    "onnx>=1.14" pytest hypothesis ninja pip)
  if ! "$VENV/bin/uv" venv -q --python "$(bash scripts/lib/python-for.sh "$python_version")" "$venv" ||
    ! "$VENV/bin/uv" pip install -q --python "$venv/bin/python" "${requirements[@]}"; then
    failed+=("$name (set-up)")
    continue
  fi
  # Run from outside the clone, with none of scripts/env.sh's variables:
  # the package must work as installed. CARGO_TARGET_DIR points nowhere so
  # that the tests of the Rust example (built against the dev venv's
  # torch, tested by scripts/test.sh) skip. NEUROPODS_TEST_WHEEL is the
  # wheel the tests install into venvs of their own.
  if ! (cd "$work" && env -i HOME="$HOME" PATH="$venv/bin:/usr/bin:/bin" TMPDIR="${TMPDIR:-/tmp}" \
      CARGO_TARGET_DIR="$work/no-target" NEUROPODS_TEST_UNSUPPORTED_TORCH="$unsupported_torch" \
      NEUROPODS_TEST_WHEEL="$wheel" \
      timeout 1800 "$venv/bin/python" -m pytest -q -p no:cacheprovider -c "$repo/pyproject.toml" \
      --rootdir "$repo" "${tests[@]/#/$repo/}"); then
    failed+=("$name")
  fi
  rm -rf "$venv"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
echo "all ${#cases[@]} cases passed"
