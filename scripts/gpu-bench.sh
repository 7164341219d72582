#!/usr/bin/env bash
# The GPU-day benchmark: runs the bench matrix on the first CUDA GPU and the roofline model for
# the same shapes, and records predicted vs measured per shape (and the PyTorch comparison when
# torch is importable). Without a GPU it prints what it would do and exits 1.
#
#   bash scripts/gpu-bench.sh [--gpu a100-80gb|h100-sxm|h200|l40s] [--out DIR] [--dry-run]
#
# Writes DIR (default bench-out/<date>) with bench-<precision>.jsonl, roofline-<precision>-BxT.json,
# roofline-*.svg, bench-*.svg and predicted-vs-measured.tsv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
gpu="" out="bench-out/$(date -u +%Y%m%dT%H%M%SZ)" dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) gpu="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
configs=(bert-base minilm-l6)
batches=1,8,32
tokens=128,384
precisions=(f16 int8)
iters=50

have_gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then have_gpu=1; fi
if [ -z "$gpu" ] && [ $have_gpu = 1 ]; then
  name="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
  case "$name" in
    *H200*) gpu=h200 ;; *H100*) gpu=h100-sxm ;; *A100*) gpu=a100-80gb ;; *L40S*) gpu=l40s ;;
    *) echo "unknown GPU '$name': pass --gpu" >&2; exit 1 ;;
  esac
fi

plan() {
  echo "would build: cargo build --release"
  for c in "${configs[@]}"; do for p in "${precisions[@]}"; do
    echo "would run: fusebert bench --device cuda --config $c --precision $p --batch $batches --tokens $tokens --warmup 10 --iters $iters --json --plot $out/bench-$c-$p.svg > $out/bench-$c-$p.jsonl"
    echo "would run: fusebert roofline --gpu ${gpu:-<gpu>} --config $c --precision $p --batch B --tokens T [--graphs] --json for each B in $batches, T in $tokens"
  done; done
  echo "would run: python3 scripts/compare-pytorch.py --config bert-base --batch $batches --tokens $tokens (if torch imports)"
  echo "would write: $out/predicted-vs-measured.tsv (config precision batch tokens predicted_ms measured_p50_ms ratio)"
}

if [ $dry = 1 ] || [ $have_gpu = 0 ]; then
  plan
  if [ $have_gpu = 0 ]; then
    echo "no GPU (nvidia-smi finds none): nothing run" >&2
    exit 1
  fi
  exit 0
fi

mkdir -p "$out"
cargo build --release --locked
bin=target/release/fusebert
printf 'config\tprecision\tbatch\ttokens\tpredicted_ms\tpredicted_graph_ms\tmeasured_p50_ms\tmeasured_over_predicted\n' > "$out/predicted-vs-measured.tsv"
for c in "${configs[@]}"; do for p in "${precisions[@]}"; do
  $bin bench --device cuda --config "$c" --precision "$p" --batch "$batches" --tokens "$tokens" --warmup 10 \
    --iters $iters --json --plot "$out/bench-$c-$p.svg" > "$out/bench-$c-$p.jsonl"
  while read -r line; do
    b=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["batch"])' "$line")
    t=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["tokens"])' "$line")
    m=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["latency_ms"]["p50"])' "$line")
    r="$out/roofline-$c-$p-${b}x$t"
    $bin roofline --gpu "$gpu" --config "$c" --precision "$p" --batch "$b" --tokens "$t" --json --plot "$r.svg" > "$r.json"
    $bin roofline --gpu "$gpu" --config "$c" --precision "$p" --batch "$b" --tokens "$t" --graphs --json > "$r-graphs.json"
    pm=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total_ms"])' "$r.json")
    pg=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total_ms"])' "$r-graphs.json")
    ratio=$(python3 -c "print(round($m / $pm, 3))")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$p" "$b" "$t" "$pm" "$pg" "$m" "$ratio" >> "$out/predicted-vs-measured.tsv"
  done < "$out/bench-$c-$p.jsonl"
done; done
if python3 -c 'import torch' 2>/dev/null; then
  python3 scripts/compare-pytorch.py --config bert-base --batch "$batches" --tokens "$tokens" > "$out/pytorch.jsonl" || true
fi
column -t "$out/predicted-vs-measured.tsv" || cat "$out/predicted-vs-measured.tsv"
echo "results in $out"
