#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input in neuropods-core with cargo-fuzz
# (libFuzzer; needs the nightly toolchain and `cargo install cargo-fuzz`):
# `deserialize`, config.json parsing and zip package reading, each for a
# bounded time. Seeds come from real blobs, configs and packages.
#
#   bash scripts/fuzz.sh [seconds per target, default 60]
#   FUZZ_TARGETS=zip_package bash scripts/fuzz.sh 30   # some targets only
#
# Crashes land in fuzz/artifacts/<target>/; turn each into a regression
# test (see docs/reliability.md).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
seconds="${1:-60}"
corpus="$NEUROPODS_HOME/fuzz-corpus"
mkdir -p "$corpus"/{deserialize,config,zip_package}
"$VENV/bin/python" - "$corpus" <<'PY'
import os, shutil, sys, tempfile
import numpy as np
import neuropods_native
corpus = sys.argv[1]
def put(target, name, data):
    with open(os.path.join(corpus, target, name), "wb") as f:
        f.write(data)
put("deserialize", "tensor", neuropods_native.serialize(np.arange(6, dtype=np.float32).reshape(2, 3)))
put("deserialize", "map", neuropods_native.serialize({"a": np.array(["x", "yz"]), "b": np.array([True, False])}))
config = {"name": "m", "platform": "torchscript",
          "input_spec": [{"name": "x", "dtype": "float32", "shape": ["n", 3, None]}],
          "output_spec": [{"name": "y", "dtype": "string", "shape": [2]}],
          "input_tensor_device": {"x": "GPU"}, "custom_ops": []}
import json
put("config", "config.json", json.dumps(config).encode())
work = tempfile.mkdtemp()
os.makedirs(os.path.join(work, "pkg", "0", "data"))
with open(os.path.join(work, "pkg", "config.json"), "w") as f:
    json.dump(config, f)
with open(os.path.join(work, "pkg", "0", "data", "model.pt"), "wb") as f:
    f.write(b"weights" * 10)
neuropods_native.write_manifest(os.path.join(work, "pkg"))
shutil.make_archive(os.path.join(work, "pkg"), "zip", os.path.join(work, "pkg"))
put("zip_package", "package.zip", open(os.path.join(work, "pkg.zip"), "rb").read())
shutil.rmtree(work)
PY
for target in ${FUZZ_TARGETS:-deserialize config zip_package}; do
  echo "== $target ($seconds s)"
  cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 2>&1 | grep -E "stat::number_of_executed_units|stat::peak_rss|Done|ERROR|SUMMARY|panicked" || true
done
