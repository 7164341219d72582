#!/usr/bin/env bash
# Runs the whole test suite on a machine with no GPU: installs the project-local toolchain
# and model (scripts/setup.sh, quick when present), checks formatting, clippy and rustdoc
# (warnings are errors), then `cargo test` (optimised test profile). Kernel tests run on the PTX
# emulator; GPU tests also run on CUDA when a GPU is present.
# FUSEBERT_SKIP_LINT=1 skips the three checks (for quick local runs; CI never sets it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
if [ "${FUSEBERT_SKIP_LINT:-0}" != 1 ]; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
  echo "== cargo clippy --all-targets -D warnings"
  cargo clippy --locked --all-targets --quiet -- -D warnings
  echo "== cargo doc -D warnings"
  RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --quiet
fi
cargo test --locked "$@"
