"""Errors are typed Python exceptions, never a panic; devices."""

from __future__ import annotations

import numpy as np
import pytest

import fusebert


def test_missing_folder_is_a_model_load_error(tmp_path):
    with pytest.raises(fusebert.ModelLoadError) as e:
        fusebert.SentenceTransformer(tmp_path / "nope", device="cpu")
    assert isinstance(e.value, OSError)


def test_broken_folder_is_a_model_load_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(fusebert.ModelLoadError):
        fusebert.SentenceTransformer(tmp_path, device="cpu")


def test_no_cuda_here(minilm):
    if fusebert.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(fusebert.NoCudaDeviceError) as e:
        fusebert.SentenceTransformer(minilm, device="cuda:1")
    assert isinstance(e.value, RuntimeError)


def test_device_none_picks_cpu_without_a_gpu(minilm):
    if fusebert.cuda_available():
        pytest.skip("a GPU is present")
    assert fusebert.SentenceTransformer(minilm).device == "cpu"


def test_bad_device_and_precision(minilm):
    with pytest.raises(fusebert.InvalidInputError):
        fusebert.SentenceTransformer(minilm, device="tpu")
    with pytest.raises(fusebert.InvalidInputError):
        fusebert.SentenceTransformer(minilm, device="cpu", precision="int8")
    with pytest.raises(fusebert.InvalidInputError):
        fusebert.SentenceTransformer(minilm, device="emu", precision="f8")
    with pytest.raises(fusebert.InvalidInputError):
        fusebert.SentenceTransformer(minilm, device="cpu", threads=0)


def test_embedding_model_is_not_a_cross_encoder(minilm):
    with pytest.raises(fusebert.ModelLoadError):
        fusebert.CrossEncoder(minilm, device="cpu")


def test_rank_needs_one_label(models):
    ce = fusebert.CrossEncoder(models / "tiny-roberta-classifier", device="cpu")
    with pytest.raises(fusebert.InvalidInputError):
        ce.rank("q", ["a"])
    with pytest.raises(fusebert.InvalidInputError):
        ce.predict([("a", "b"), ("a",), ("a", "b", "c")])


def test_threads_do_not_change_the_numbers(minilm):
    texts = [f"text {i} " * (1 + i % 9) for i in range(40)]
    one = fusebert.SentenceTransformer(minilm, device="cpu", threads=1).encode(texts)
    two = fusebert.SentenceTransformer(minilm, device="cpu", threads=2).encode(texts)
    assert np.array_equal(one, two)
