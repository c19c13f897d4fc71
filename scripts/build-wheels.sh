#!/usr/bin/env bash
# Usage: scripts/build-wheels.sh [PYTHON...]
# Release wheels, one per CPython (default: 3.10, 3.11, 3.12 and 3.13, as
# scripts/lib/python-for.sh finds them), each holding every backend
# (scripts/lib/build-backends.sh --every-torch: the TorchScript backend once
# per supported torch release). auditwheel repairs each into a manylinux
# wheel, leaving out the frameworks' own libraries (they come from the
# frameworks' wheels).
# Prints the folder of the wheels: $NEUROPODS_HOME/wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/lib/venv.sh
pythons=("$@")
if [ ${#pythons[@]} -eq 0 ]; then
  for version in 3.10 3.11 3.12 3.13; do
    pythons+=("$(bash scripts/lib/python-for.sh "$version")")
  done
fi
out="$NEUROPODS_HOME/wheels"
rm -rf "$out"
mkdir -p "$out/unrepaired"
for python in "${pythons[@]}"; do
  version="$(python_version "$python")"
  echo "building the wheel for CPython $version ($python)" >&2
  bash scripts/lib/build-backends.sh --every-torch "$python"
  target="$(extension_target_dir "$python")"
  # maturin's log is shown on failure only (it also warns that pip builds with
  # another backend: build_backend/ wraps maturin's).
  if ! CARGO_TARGET_DIR="$target" maturin build --release --auditwheel skip -i "$python" \
    --out "$out/unrepaired" > "$out/maturin.log" 2>&1; then
    cat "$out/maturin.log" >&2
    exit 1
  fi
done
# Frameworks' libraries stay out: the user's torch/TF provide them at run
# time (found through rpath into site-packages, or by the core).
excluded=(libtorch_cpu.so libc10.so libtensorflow_cc.so.2 libtensorflow_framework.so.2)
exclude_args=()
for lib in "${excluded[@]}"; do exclude_args+=(--exclude "$lib"); done
for wheel in "$out"/unrepaired/*.whl; do
  "$VENV/bin/python" -m auditwheel repair "${exclude_args[@]}" -w "$out" "$wheel" >&2
done
rm -rf "$out/unrepaired" "$out/maturin.log"
ls "$out"/*.whl >&2
echo "$out"
