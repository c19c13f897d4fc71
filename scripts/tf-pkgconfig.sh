#!/usr/bin/env bash
# Makes a pkg-config entry for the TensorFlow C API of the venv's
# tensorflow-cpu wheel, which ships no libtensorflow.so: the API is split
# over libtensorflow_cc.so.2 and libtensorflow_framework.so.2. tensorflow-sys
# finds `tensorflow` through pkg-config (otherwise it tries to download).
set -euo pipefail
source "$(dirname "$0")/env.sh"
TF_DIR="$("$VENV/bin/python" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("tensorflow").origin))')"
OUT="$NEUROPODS_HOME/tensorflow-pkgconfig"
mkdir -p "$OUT"
ln -sf "$TF_DIR/libtensorflow_cc.so.2" "$OUT/libtensorflow.so"
ln -sf "$TF_DIR/libtensorflow_framework.so.2" "$OUT/libtensorflow_framework.so"
cat > "$OUT/tensorflow.pc" <<PC
Name: tensorflow
Description: TensorFlow C API from the tensorflow-cpu wheel ($TF_DIR)
Version: 2.21.0
Libs: -L$OUT -ltensorflow -ltensorflow_framework
Cflags: -I$TF_DIR/include
PC
echo "$OUT"
