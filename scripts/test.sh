#!/usr/bin/env bash
# Runs the whole test suite on a machine with no GPU: installs the project-local toolchain
# and model (scripts/setup.sh, quick when present), then `cargo test` (optimised test profile).
# Kernel tests run on the PTX emulator; GPU tests also run on CUDA when a GPU is present.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
cargo test --locked "$@"
