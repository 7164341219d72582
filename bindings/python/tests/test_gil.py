"""The GIL is released during forward passes: other Python threads run meanwhile."""

from __future__ import annotations

import threading
import time

import numpy as np

import fusebert


def test_other_threads_run_during_encode(minilm):
    m = fusebert.SentenceTransformer(minilm, device="cpu", threads=1)
    texts = ["The quick brown fox jumps over the lazy dog. " * 6] * 200
    m.encode(texts[:2])  # warm
    count, stop = [0], threading.Event()

    def spin():
        while not stop.is_set():
            count[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        start_count, t0 = count[0], time.perf_counter()
        m.encode(texts)
        secs, advanced = time.perf_counter() - t0, count[0] - start_count
    finally:
        stop.set()
        t.join()
    # With the GIL held through the call, the spinning thread would advance only at the few
    # points where the Rust side hands it back (between batches).
    assert advanced >= 10_000, (advanced, secs)


def test_two_threads_two_models_same_results(minilm):
    texts = [f"sentence {i}" for i in range(64)]
    a = fusebert.SentenceTransformer(minilm, device="cpu", threads=1)
    b = fusebert.SentenceTransformer(minilm, device="cpu", threads=1)
    want = a.encode(texts)
    out = {}
    ts = [threading.Thread(target=lambda k=k, m=m: out.__setitem__(k, m.encode(texts))) for k, m in (("a", a), ("b", b))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert np.array_equal(out["a"], want) and np.array_equal(out["b"], want)
