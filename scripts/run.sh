#!/usr/bin/env bash
# The main job: embeds sample text with the bundled all-MiniLM-L6-v2 (installing what it needs
# first). On a machine with a GPU it also runs the benchmark.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
cargo build --release --locked --quiet
bin=target/release/fusebert
"$bin" info
"$bin" embed --normalize "The quick brown fox jumps over the lazy dog." "Hello, world!"
if "$bin" info --cuda-available >/dev/null 2>&1; then
  "$bin" embed --device cuda --normalize "The quick brown fox jumps over the lazy dog."
fi
