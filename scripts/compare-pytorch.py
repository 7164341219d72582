#!/usr/bin/env python3
"""End-to-end comparison with PyTorch on the same GPU (for the GPU day; needs torch with CUDA,
no network: the model is built from its shape with random weights, like `fusebert bench
--config`). Prints one JSON object per shape and precision: PyTorch eager fp16, PyTorch with
scaled_dot_product_attention (what HF BERT uses), and fusebert's `bench` on the same shape.

    python3 scripts/compare-pytorch.py --config bert-base --batch 1,8,32 --tokens 128,384
"""
import argparse
import json
import subprocess
import sys
import time

SHAPES = {"bert-base": (12, 768, 12, 3072), "bert-large": (24, 1024, 16, 4096), "minilm-l6": (6, 384, 12, 1536)}


def encoder(torch, layers, hidden, heads, ffn):
    nn = torch.nn

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(hidden, 3 * hidden)
            self.out = nn.Linear(hidden, hidden)
            self.ln1 = nn.LayerNorm(hidden, eps=1e-12)
            self.ffn1 = nn.Linear(hidden, ffn)
            self.ffn2 = nn.Linear(ffn, hidden)
            self.ln2 = nn.LayerNorm(hidden, eps=1e-12)

        def forward(self, x):
            b, s, _ = x.shape
            q, k, v = self.qkv(x).view(b, s, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            a = a.transpose(1, 2).reshape(b, s, hidden)
            x = self.ln1(x + self.out(a))
            return self.ln2(x + self.ffn2(torch.nn.functional.gelu(self.ffn1(x))))

    return nn.Sequential(*[Layer() for _ in range(layers)])


def time_ms(torch, fn, iters):
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {"mean": sum(times) / len(times), "p50": times[len(times) // 2], "min": times[0]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="bert-base", choices=sorted(SHAPES))
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--tokens", default="128")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--fusebert", default="target/release/fusebert")
    a = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("error: PyTorch is not installed", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("error: no CUDA GPU visible to PyTorch", file=sys.stderr)
        return 1
    model = encoder(torch, *SHAPES[a.config]).cuda().half().eval()
    for b in map(int, a.batch.split(",")):
        for t in map(int, a.tokens.split(",")):
            x = torch.randn(b, t, SHAPES[a.config][1], device="cuda", dtype=torch.half)
            with torch.inference_mode():
                eager = time_ms(torch, lambda: model(x), a.iters)
            ours = subprocess.run(
                [a.fusebert, "bench", "--device", "cuda", "--config", a.config, "--batch", str(b), "--tokens", str(t),
                 "--iters", str(a.iters), "--warmup", "10", "--json"], capture_output=True, text=True)
            line = {"config": a.config, "batch": b, "tokens": t, "gpu": torch.cuda.get_device_name(0),
                    "pytorch_fp16_sdpa_ms": eager, "pytorch_version": torch.__version__}
            if ours.returncode == 0 and ours.stdout.strip():
                line["fusebert_f16_ms"] = json.loads(ours.stdout.splitlines()[0])["latency_ms"]
            else:
                line["fusebert_error"] = ours.stderr.strip()[-500:]
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
