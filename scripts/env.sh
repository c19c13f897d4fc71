# Sourced by the other scripts: where the venv, cargo's target folder and the
# wheel live (outside the clone, so fresh clones reuse them), and how the
# torch backend finds libtorch (from the venv's torch, like tch expects).
export NEUROPODS_HOME="${NEUROPODS_HOME:-$HOME/.cache/neuropods}"
export VENV="$NEUROPODS_HOME/venv"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$NEUROPODS_HOME/target}"
export PATH="$VENV/bin:$HOME/.cargo/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
export PYO3_PYTHON="$VENV/bin/python"
# tensorflow-sys finds the wheel's TF C API here (made by scripts/tf-pkgconfig.sh).
export PKG_CONFIG_PATH="$NEUROPODS_HOME/tensorflow-pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
# Cargo's target folder for what is built against one Python (the Python
# backend, the extension): the shared one for the venv's python, else one per
# Python version, so that builds for different Pythons do not undo each other.
python_target_dir() {
  if [ "$("$1" -c 'import sys; print(sys.prefix)')" = "$VENV" ]; then
    echo "$CARGO_TARGET_DIR"
  else
    echo "$NEUROPODS_HOME/target-python-$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  fi
}
