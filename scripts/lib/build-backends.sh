#!/usr/bin/env bash
# Usage: scripts/lib/build-backends.sh [--every-torch] [PYTHON]
# Builds what the wheel carries beside its extension module into
# python/neuropods_native/backends (maturin packs that folder):
# - the TorchScript backend, libneuropods_torchscript-torchX.Y.so (the core
#   opens the one matching the installed torch): for the venv's torch release
#   only (the main job), or with --every-torch once per supported release
#   (release wheels, `pip install .`). The venv's release is the workspace's
#   own build (scripts/env.sh's settings, cargo's shared target folder): the
#   one `cargo build`, clippy and `cargo test` use, not a second one. Other
#   releases are built against that release's wheel (scripts/lib/libtorch.sh),
#   each in a target folder of its own;
# - the TensorFlow and ONNX backends, and the worker executable;
# - the Python backend, for PYTHON's version (default: the venv's python).
# Needs cargo, a C++ compiler and PyPI (framework wheels, fetched once into
# $NEUROPODS_HOME/frameworks); no framework needs to be installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
source scripts/lib/progress.sh
every_torch=false
if [ "${1:-}" = "--every-torch" ]; then
  every_torch=true
  shift
fi
python="${1:-$VENV/bin/python}"
# Each supported torch release, and the backend crate whose tch speaks it.
workspace_manifest=crates/neuropods-torchscript/Cargo.toml
TORCH_BUILDS=(
  "2.11.0 crates/neuropods-torchscript/tch-0.24/Cargo.toml"
  "2.12.1 crates/neuropods-torchscript/tch-0.24/Cargo.toml"
  "2.13.0 $workspace_manifest"
)
# The venv's torch X.Y, read from its version.py (importing torch takes seconds).
venv_torch=""
for version_py in "$VENV"/lib/python3*/site-packages/torch/version.py; do
  if [ -f "$version_py" ]; then
    venv_torch="$(sed -n -E "s/^__version__ = '([0-9]+\.[0-9]+)\..*/\1/p" "$version_py")"
  fi
done
if ! $every_torch && [ -z "$venv_torch" ]; then
  echo "build-backends.sh: the venv ($VENV) has no torch; run scripts/lib/venv.sh, or pass --every-torch" >&2
  exit 1
fi

backends=python/neuropods_native/backends
rm -rf "$backends"
mkdir -p "$backends"
bash scripts/lib/tf-pkgconfig.sh > /dev/null
built_venv_torch=false
for build in "${TORCH_BUILDS[@]}"; do
  read -r version manifest <<< "$build"
  release="${version%.*}"
  if [ "$release" = "$venv_torch" ] && [ "$manifest" = "$workspace_manifest" ]; then
    # Built below with the rest of the workspace.
    built_venv_torch=true
    continue
  fi
  if ! $every_torch && [ "$release" != "$venv_torch" ]; then
    continue
  fi
  target="$NEUROPODS_HOME/target-torch-$version"
  libtorch="$(step "fetching torch $version's headers (scripts/lib/framework.sh)" "under a minute, once" \
    bash scripts/lib/libtorch.sh "$version")"
  LIBTORCH="$libtorch" LIBTORCH_BYPASS_VERSION_CHECK=1 LIBTORCH_CXX11_ABI=1 CARGO_TARGET_DIR="$target" \
    step "building the TorchScript backend for torch $release" "4 min, once" \
    env -u LIBTORCH_USE_PYTORCH cargo build --release --manifest-path "$manifest" --lib
  cp "$target/release/libneuropods_torchscript.so" "$backends/libneuropods_torchscript-torch$release.so"
done
# The workspace's libraries, executables and examples, with scripts/env.sh's
# settings. `--examples` makes cargo resolve features with the
# dev-dependencies, as `cargo test` and clippy do: with other features the
# test build would rebuild the backends, and this build again after it.
step "building the backends and the worker (cargo build --release)" "6 min cold, seconds after" \
  cargo build --release --lib --bins --examples
if $built_venv_torch; then
  cp "$CARGO_TARGET_DIR/release/libneuropods_torchscript.so" "$backends/libneuropods_torchscript-torch$venv_torch.so"
fi
for backend in tensorflow onnx; do
  cp "$CARGO_TARGET_DIR/release/libneuropods_$backend.so" "$backends/"
done
# The worker of out-of-process execution; it finds the backends beside itself.
cp "$CARGO_TARGET_DIR/release/neuropods-worker" "$backends/"
# The Python backend embeds the interpreter it runs in: one build per
# Python version. The venv's python's was built above; another's is built
# in that Python's target folder, with the extension (so that maturin's
# build there finds the crates they share done).
python_target="$(extension_target_dir "$python")"
if [ "$python_target" != "$CARGO_TARGET_DIR" ]; then
  (
    pyo3_env "$python"
    CARGO_TARGET_DIR="$python_target" step "building the Python backend for $python" "2 min, once" \
      cargo build --release -p neuropods-python-library -p neuropods-py --lib
  )
fi
cp "$python_target/release/libneuropods_python.so" "$backends/"
