#!/usr/bin/env bash
# The main job: embeds sample text with the bundled all-MiniLM-L6-v2 (installing what it needs
# first) on the CPU reference and on the kernels (PTX emulator), and checks the kernel path
# against the reference. On a machine with a GPU it also verifies and benchmarks on CUDA.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
cargo build --release --locked --quiet -p fusebert-cli
bin=target/release/fusebert
texts=("The quick brown fox jumps over the lazy dog." "Hello, world!")
"$bin" info
echo "== CPU reference (f32)"
"$bin" embed --normalize "${texts[@]}"
echo "== kernels on the PTX emulator (fp16)"
"$bin" embed --device emu --normalize "${texts[@]}"
echo "== verify: kernels (emulator) vs CPU reference, per layer"
"$bin" verify --device emu --precision f16
"$bin" verify --device emu --precision int8
if "$bin" info --cuda-available >/dev/null 2>&1; then
  echo "== CUDA"
  "$bin" verify --device cuda --precision f16
  "$bin" verify --device cuda --precision int8
  for p in f16 int8; do
    for shape in "--batch 1 --tokens 128" "--batch 32 --tokens 128" "--batch 8 --tokens 512"; do
      # shellcheck disable=SC2086
      "$bin" bench --device cuda --precision "$p" $shape --iters 50
    done
  done
fi
