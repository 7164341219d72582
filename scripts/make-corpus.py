#!/usr/bin/env python3
"""Writes a deterministic corpus of N text lines of 5-60 English-like words (default 2000) to
stdout: the shape of the corpus used for fusebert's CPU throughput comparison. No network, no deps.
Usage: python3 scripts/make-corpus.py [N] [SEED] > corpus.txt"""
import random
import sys

WORDS = (
    "the of and to in is was for on that with as by at from his her it an were are which this be or "
    "has had first one their its new after who they have two been also but not other time all most "
    "during more into only between some over states city year world people school state many such "
    "university used three later since when can would about team game season national may while "
    "where under both these part known several him music film album series made war government than "
    "including united early she through four second there then well each however public american "
    "history released de life work around high because member until church group before best house "
    "local way played end general left following called family small built north became same league "
    "system last south based number area club form name club river west central county named born "
    "development large language language model encoder transformer attention sentence embedding search "
    "vector quick brown fox jumps over lazy dog semantic similarity retrieval query document kernel "
    "memory bandwidth latency throughput batch token layer head weight bias matrix product GPU CPU"
).split()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1234)
    out = sys.stdout
    for _ in range(n):
        k = rng.randint(5, 60)
        words = [rng.choice(WORDS) for _ in range(k)]
        words[0] = words[0].capitalize()
        out.write(" ".join(words) + ".\n")


if __name__ == "__main__":
    main()
