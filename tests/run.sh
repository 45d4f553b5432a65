#!/usr/bin/env bash
# From a fresh machine: install what is missing, build (CUDA too when nvcc is present), and run
# every test with ctest. Tests labelled `gpu` run only where a GPU is visible.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../launch/setup.sh"
# slurm-wlm and munge: the tests labelled `slurm` start a one-node Slurm cluster of their own
# (their own munged, slurmctld and slurmd on their own socket and ports; the packages' services,
# where systemd starts them, are not used: slurmctld and slurmd find no /etc/slurm/slurm.conf).
weft_install_deps slurm-wlm munge
weft_install_npm
weft_build

exclude=()
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "weft: no GPU visible: skipping tests labelled gpu"
  exclude=(-LE gpu)
fi
cd "$WEFT_BUILD_DIR"
ctest --output-on-failure -j"$(nproc)" "${exclude[@]}" "$@"
