#!/usr/bin/env python3
"""Fits the polynomial of `gelu_erf` in kernels/common.cuh (needs mpmath).

GELU(x) = x * Phi(x); with a = |x|, q = Phi(-a) = 0.5 erfc(a / sqrt 2) = t * S(t) * exp(-a^2 / 2),
t = 1 / (1 + C a). S is smooth on t in [0, 1] (t -> 0 is a -> inf, where S -> C / sqrt(2 pi)), so a
degree-N polynomial fitted for *relative* error (least squares with Lawson's reweighting towards
minimax) bounds q's relative error for every a >= 0. Prints the coefficients (highest degree first,
the Horner order of the kernel) rounded to f32 and the fit's max relative error.

    python3 scripts/fit-gelu-erf.py [DEGREE=8] [C=0.35]
"""
import struct
import sys

import mpmath as mp

mp.mp.dps = 30


def s_exact(t, c):
    t = mp.mpf(t)
    if t == 0:
        return c / mp.sqrt(2 * mp.pi)
    a = (1 / t - 1) / c
    return 0.5 * mp.erfc(a / mp.sqrt(2)) * mp.exp(a * a / 2) / t


def fit(c, n, points=400, iters=60):
    ts = [(1 - mp.cos(mp.pi * (i + 0.5) / points)) / 2 for i in range(points)]
    ys = [s_exact(t, c) for t in ts]
    w = [mp.mpf(1)] * points
    best = None
    for _ in range(iters):
        a = mp.matrix(points, n + 1)
        b = mp.matrix(points, 1)
        for i, (t, y) in enumerate(zip(ts, ys)):
            sw = mp.sqrt(w[i]) / y
            for j in range(n + 1):
                a[i, j] = t**j * sw
            b[i] = y * sw
        x, _ = mp.qr_solve(a, b)
        errs = [(sum(x[j] * t**j for j in range(n + 1)) - y) / y for t, y in zip(ts, ys)]
        m = max(abs(e) for e in errs)
        if best is None or m < best[0]:
            best = (m, [x[j] for j in range(n + 1)])
        total = sum(w[i] * abs(errs[i]) for i in range(points))
        w = [w[i] * abs(errs[i]) / total for i in range(points)]
    return best


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    c = mp.mpf(sys.argv[2] if len(sys.argv) > 2 else "0.35")
    err, coef = fit(c, n)
    f32 = [struct.unpack("f", struct.pack("f", float(v)))[0] for v in coef]
    print(f"degree {n}, C = {c}: max relative error of S {mp.nstr(err, 3)}")
    print("coefficients, highest degree first:", ", ".join(f"{v:.9g}f" for v in reversed(f32)))


if __name__ == "__main__":
    main()
