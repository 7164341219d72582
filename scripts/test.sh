#!/usr/bin/env bash
# Runs the whole test suite on a machine with no GPU: installs the project-local toolchain
# and model (scripts/setup.sh, quick when present), checks formatting, clippy and rustdoc
# (warnings are errors), the build promises (scripts/check-build.sh: shipped PTX, dependency
# trees, packaging) and the docs (scripts/check-docs.sh: generated tables, links), then
# `cargo test --workspace` (optimised test profile), then the Python package (scripts/test-python.sh). Kernel tests run on
# the PTX emulator; GPU tests also run on CUDA when a GPU is present.
# FUSEBERT_SKIP_LINT=1 skips these checks (for quick local runs; CI never sets it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# CI builds once from a clean clone: incremental caches would only cost disk (a full build's
# incremental state is several GB and a CI disk once ran out).
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
  df -h . | tail -1 | awk '{print "== disk: " $4 " free"}'
fi
bash scripts/setup.sh
# The Python venvs (pip installs, network-bound: about 80 s in CI) are made in the background
# while cargo builds; step 8 waits for them.
venvs_pid=""
if [ "$#" -eq 0 ]; then
  mkdir -p target
  bash scripts/test-python.sh --venvs >target/python-venvs.log 2>&1 &
  venvs_pid=$!
  # a step that fails ends the run, and the venvs' job with it
  # (each command `|| true`: under set -e a failing command in the trap would be the exit status)
  trap 'pkill -P "$venvs_pid" 2>/dev/null || true; kill "$venvs_pid" 2>/dev/null || true' EXIT
fi
if [ "${FUSEBERT_SKIP_LINT:-0}" != 1 ]; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
  echo "== cargo clippy --all-targets -D warnings"
  cargo clippy --locked --workspace --all-targets --quiet -- -D warnings
  echo "== cargo doc -D warnings"
  RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps --quiet
  bash scripts/check-build.sh
  bash scripts/check-docs.sh
fi
cargo test --locked --workspace "$@"
# The "on CUDA when present" tests once more with the CUDA backend on the driver stand-in
# (deferred mode: work runs only when the host observes it), so the CUDA path runs in CI too.
# On a GPU machine they already ran on the real driver above. The fusebert-cuda-standin tests
# (part of the run above) cover eager mode, graphs and faults; cli_standin the binary's opt-in.
if [ "$#" -eq 0 ]; then
  echo "== CUDA-path tests on the driver stand-in (FUSEBERT_CUDA_DRIVER=emulator:deferred)"
  # --workspace: the same feature resolution as the run above, so nothing is rebuilt
  FUSEBERT_CUDA_DRIVER=emulator:deferred cargo test --locked --workspace --test device_cuda \
    --test kernels_attention --test kernels_gemm --test kernels_layernorm --test kernels_misc \
    --test forward_device --test serve_device
fi
# Second pass: the kernel and forward-pass tests again with every approximate
# instruction (ex2/rcp/rsqrt/... .approx) returning values anywhere inside the PTX ISA's error
# bound (hashed per input) instead of the correctly rounded one: accuracy must hold against what
# hardware may return. Same binaries as above (no rebuild); about 1.2 minutes on 2 cores
# (forward_golden, ~3 minutes on its own, is left to the first pass).
if [ "$#" -eq 0 ]; then
  echo "== FUSEBERT_EMU_MATH=envelope: kernel and forward-pass tests"
  FUSEBERT_EMU_MATH=envelope cargo test --locked --workspace --test kernels_gemm \
    --test kernels_attention --test kernels_layernorm --test kernels_misc --test forward_device
fi
# The Python package (bindings/python): its extension module from the same test-profile build,
# then pytest (parity with sentence-transformers, LangChain/LlamaIndex, Ray on a local cluster).
if [ "$#" -eq 0 ]; then
  echo "== Python package (scripts/test-python.sh)"
  if ! wait "$venvs_pid"; then
    cat target/python-venvs.log >&2
    echo "error: making the Python venvs failed (log above)" >&2
    exit 1
  fi
  trap - EXIT
  bash scripts/test-python.sh
fi
