#!/usr/bin/env bash
# The build promises of the workspace, checked the way a user meets them:
# 1. the PTX shipped in crates/fusebert-kernels/ptx is exactly what nvcc 13.0 makes of the .cu
#    sources now (recompiled into a scratch folder and compared);
# 2. the library a Rust project adds (`fusebert`) has no HTTP or CLI crate in its normal
#    dependency tree, and the emulator (`fusebert-emu`) no CUDA crate and no fusebert crate;
# 3. every publishable crate packages (`cargo package`), and the packaged `fusebert`, unpacked in
#    a clean folder outside the repository, builds offline with no nvcc anywhere.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

echo "== shipped PTX == nvcc 13.0's"
CARGO_TARGET_DIR="$root/target/check-build" bash scripts/build-ptx.sh --check "$scratch/ptx" >/dev/null
if ! diff -r -q crates/fusebert-kernels/ptx "$scratch/ptx"; then
  echo "error: crates/fusebert-kernels/ptx differs from nvcc's output: run scripts/build-ptx.sh and commit ptx/" >&2
  exit 1
fi

echo "== dependency trees"
forbidden='^(axum|tokio|hyper|hyper-util|clap|indicatif|fusebert-server|fusebert-cli|fusebert-cuda-standin) '
if cargo tree --locked -p fusebert -e normal --prefix none | grep -E "$forbidden" | sort -u | grep .; then
  echo "error: the fusebert library depends on the crates above" >&2
  exit 1
fi
if cargo tree --locked -p fusebert-emu -e normal --prefix none | grep -E '^(cudarc|fusebert|fusebert-[a-z-]+) ' \
  | grep -v '^fusebert-emu ' | sort -u | grep .; then
  echo "error: the emulator depends on the crates above" >&2
  exit 1
fi
for c in fusebert-emu fusebert-core fusebert-kernels fusebert fusebert-server fusebert-cli; do
  printf '%-22s %4d packages (normal dependencies, itself included)\n' "$c" \
    "$(cargo tree --locked -p "$c" -e normal --prefix none | sed 's/ (\*)//' | sort -u | wc -l)"
done

echo "== cargo package, then the packaged fusebert in a clean folder without nvcc"
CARGO_TARGET_DIR="$scratch/target" cargo package --locked --workspace --no-verify --allow-dirty --quiet 2>/dev/null
mkdir -p "$scratch/clean"
for c in fusebert-core fusebert-emu fusebert-kernels fusebert; do
  tar -xzf "$scratch/target/package/$c-0.1.0.crate" -C "$scratch/clean"
done
cat >"$scratch/clean/Cargo.toml" <<'TOML'
[workspace]
resolver = "2"
members = ["fusebert-0.1.0"]
[patch.crates-io]
fusebert-core = { path = "fusebert-core-0.1.0" }
fusebert-emu = { path = "fusebert-emu-0.1.0" }
fusebert-kernels = { path = "fusebert-kernels-0.1.0" }
TOML
cp Cargo.lock "$scratch/clean/Cargo.lock"
cargo_bin="$(dirname "$(command -v cargo)")"
(cd "$scratch/clean" && env -u CUDA_HOME -u CUDA_PATH NVCC=/nonexistent/nvcc PATH="$cargo_bin:/usr/bin:/bin" \
  CARGO_TARGET_DIR="$root/target/check-build" cargo build --offline --quiet -p fusebert)
echo "packaged fusebert builds without nvcc"
