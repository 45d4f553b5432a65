#!/usr/bin/env bash
# From a fresh machine: install what is missing, build (CUDA too when nvcc is present), and run
# every test with ctest. Tests labelled `gpu` run only where a GPU is visible.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../launch/setup.sh"
weft_install_deps
weft_install_npm
weft_build

exclude=()
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "weft: no GPU visible: skipping tests labelled gpu"
  exclude=(-LE gpu)
fi
cd "$WEFT_BUILD_DIR"
ctest --output-on-failure -j"$(nproc)" "${exclude[@]}" "$@"
