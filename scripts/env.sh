# Sourced by every script, and by a person for a shell that builds and tests
# as the scripts do (`source scripts/env.sh`, then `cargo test`, `pytest`,
# `python examples/addition.py`): where the venv, cargo's target folder and
# the wheel live (outside the clone, so fresh clones reuse them), and every
# variable a build or a test needs. Every cargo command of the project runs
# with these same variables, so that one command never rebuilds what
# another built (torch-sys and pyo3 rebuild when a variable they watch
# changes). Sourcing it again, as nested scripts do, changes nothing: a
# search path that grew with each nesting (PKG_CONFIG_PATH, watched by the
# build scripts of bzip2-sys and curl-sys, which torch-sys's and
# tensorflow-sys's build scripts depend on) made each nesting level rebuild
# torch-sys.

# Usage: prepend_path VAR DIR: puts DIR first in the search path VAR, unless
# VAR already has it.
prepend_path() {
  case ":${!1:-}:" in
    *":$2:"*) ;;
    *) export "$1=$2${!1:+:${!1}}" ;;
  esac
}
export NEUROPODS_HOME="${NEUROPODS_HOME:-$HOME/.cache/neuropods}"
export VENV="$NEUROPODS_HOME/venv"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$NEUROPODS_HOME/target}"
prepend_path PATH "$HOME/.cargo/bin"
prepend_path PATH "$VENV/bin"
# torch-sys takes libtorch from the venv's torch (through `python3`, the
# venv's on PATH): the workspace's TorchScript backend, the one the wheel
# carries for that release, clippy and the tests are one build.
export LIBTORCH_USE_PYTORCH=1
# tensorflow-sys finds the wheel's TF C API here (made by scripts/lib/tf-pkgconfig.sh).
prepend_path PKG_CONFIG_PATH "$NEUROPODS_HOME/tensorflow-pkgconfig"

# Rust test binaries and examples link the frameworks but have no rpath to
# them: the venv's torch and TF are on the loader's path, and the core is
# told where they are (it preloads them; the ONNX backend opens
# libonnxruntime.so itself). Plain paths, so sourcing this costs no Python.
site_packages=("$VENV"/lib/python3*/site-packages)
site_packages="${site_packages[0]}"
export NEUROPODS_LIBTORCH_DIR="$site_packages/torch/lib"
export NEUROPODS_TENSORFLOW_DIR="$site_packages/tensorflow"
export NEUROPODS_ONNXRUNTIME_DIR="$site_packages/onnxruntime/capi"
prepend_path LD_LIBRARY_PATH "$NEUROPODS_TENSORFLOW_DIR"
prepend_path LD_LIBRARY_PATH "$NEUROPODS_LIBTORCH_DIR"
# The interpreter Rust programs embed for python-platform models.
export NEUROPODS_PYTHON="$VENV/bin/python"
venv_python_version="${site_packages%/site-packages}"
venv_python_version="${venv_python_version##*/python}"

# Usage: python_version PYTHON: prints its X.Y.
python_version() {
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'
}

# pyo3 is configured as maturin configures it (maturin sets these for its
# builds, and pyo3's build script reruns whenever one changes: without them
# a maturin build and a cargo build would undo each other's pyo3).
# Usage: pyo3_env PYTHON [its X.Y]; this file calls it for the venv's python.
pyo3_env() {
  export PYO3_PYTHON="$1"
  export PYO3_BUILD_EXTENSION_MODULE=1
  export PYO3_ENVIRONMENT_SIGNATURE="cpython-${2:-$(python_version "$1")}-64bit"
}
pyo3_env "$VENV/bin/python" "$venv_python_version"
unset site_packages venv_python_version

# Cargo's target folder for what is built against one Python (the
# extension module, and the Python backend for another Python than the
# venv's): the workspace's for the venv's python, whose pyo3 configuration
# this file sets, else one per Python version, so that builds for different
# Pythons do not undo each other. NEUROPODS_EXTENSION_TARGET_DIR overrides
# it (`pip install .`: another interpreter of the same version).
extension_target_dir() {
  if [ -n "${NEUROPODS_EXTENSION_TARGET_DIR:-}" ]; then
    echo "$NEUROPODS_EXTENSION_TARGET_DIR"
  elif [ "$("$1" -c 'import sys; print(sys.prefix)')" = "$VENV" ]; then
    echo "$CARGO_TARGET_DIR"
  else
    echo "$NEUROPODS_HOME/target-python-$(python_version "$1")"
  fi
}
