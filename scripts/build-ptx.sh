#!/usr/bin/env bash
# Recompiles every crates/fusebert-kernels/kernels/*.cu with nvcc 13.0 (sm_80 and sm_90; *_sm90.cu
# for sm_90a only) and writes the PTX, the ptxas report and the source manifest to
# crates/fusebert-kernels/ptx/ (the PTX that ships with the crate). With --check DIR it writes to DIR instead, for comparing.
# Run it after editing a .cu; commit ptx/ with the source.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="$PWD/crates/fusebert-kernels/ptx"
if [ "${1:-}" = "--check" ]; then dest="${2:?--check needs a folder}"; fi
[ -x .venv-cuda/bin/python ] || bash scripts/setup.sh
mkdir -p "$dest"
# `cargo check` runs the build script (the compiler) without generating the crate's code: the
# PTX is all this script wants
FUSEBERT_SHIP_PTX="$dest" FUSEBERT_CUDA_ARCH=sm_80 cargo check --locked -q -p fusebert-kernels
echo "PTX of $(ls "$dest"/*.ptx | wc -l) module variants written to $dest"
