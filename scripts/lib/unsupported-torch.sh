#!/usr/bin/env bash
# Prints a folder holding a real torch release that no TorchScript backend
# was built for (scripts/lib/framework.sh: `--no-deps --target`), for
# tests/test_torch_versions.py.
set -euo pipefail
bash "$(dirname "$0")/framework.sh" torch 2.14.1
