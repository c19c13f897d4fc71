#!/usr/bin/env bash
# Makes a pkg-config entry for the TensorFlow C API of the tensorflow-cpu
# wheel (the TF backend links against it; at run time it uses the user's
# TF). The wheel ships no libtensorflow.so: the API is split over
# libtensorflow_cc.so.2 and libtensorflow_framework.so.2, linked here from
# the wheel's contents (scripts/lib/framework.sh: the venv's TF release, so
# it comes from uv's cache, not a second download). tensorflow-sys finds
# `tensorflow` through pkg-config (otherwise it tries to download).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
version=2.21.0
OUT="$NEUROPODS_HOME/tensorflow-pkgconfig"
if [ "$(cat "$OUT/.version" 2>/dev/null)" != "$version" ]; then
  tf="$(bash scripts/lib/framework.sh tensorflow-cpu "$version")/tensorflow"
  rm -rf "$OUT"
  mkdir -p "$OUT"
  ln -s "$tf/libtensorflow_cc.so.2" "$tf/libtensorflow_framework.so.2" "$OUT/"
  ln -s libtensorflow_cc.so.2 "$OUT/libtensorflow.so"
  ln -s libtensorflow_framework.so.2 "$OUT/libtensorflow_framework.so"
  cat > "$OUT/tensorflow.pc" <<PC
Name: tensorflow
Description: TensorFlow C API from the tensorflow-cpu $version wheel
Version: $version
Libs: -L$OUT -ltensorflow -ltensorflow_framework
PC
  echo "$version" > "$OUT/.version"
fi
echo "$OUT"
