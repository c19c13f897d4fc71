#!/usr/bin/env bash
# Usage: scripts/lib/libtorch.sh VERSION   (e.g. 2.11.0)
# Prints the folder of torch VERSION's wheel contents (include/, lib/,
# version.py: the layout tch's LIBTORCH expects), from
# scripts/lib/framework.sh. The backend is built against its headers and
# link libraries; at run time it uses the torch the user installed.
set -euo pipefail
echo "$(bash "$(dirname "$0")/framework.sh" torch "$1")/torch"
