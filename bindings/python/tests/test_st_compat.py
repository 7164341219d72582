"""Parity with sentence-transformers 6.2 (the goldens) and with the CLI, and the drop-in API's
behaviour (shapes, truncation, prompts, normalisation, truncate_dim, similarity)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import fusebert
from conftest import MODELS, cases, cli_binary, golden

MINILM_CASES = ["fox", "hello", "paragraph", "empty", "batch3"]
ZOO_EMBEDDERS = ["tiny-roberta-cls", "tiny-distilbert-mean", "tiny-bert-max-hd48"]


def cos_gap(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float((1 - cos).max())


@pytest.fixture(scope="module")
def st_cpu(minilm):
    return fusebert.SentenceTransformer(minilm, device="cpu")


@pytest.mark.parametrize("case", MINILM_CASES)
def test_minilm_cpu_matches_sentence_transformers(st_cpu, case):
    g = golden("all-MiniLM-L6-v2", case)
    texts = cases("all-MiniLM-L6-v2")[case]
    # the folder has a Normalize module: encode() without normalize_embeddings is L2-normalised
    emb = st_cpu.encode(texts)
    assert emb.shape == g["sentence_embedding_l2norm"].shape
    err = float(np.abs(emb - g["sentence_embedding_l2norm"]).max())
    print(f"all-MiniLM-L6-v2/{case} cpu max abs err {err:.2e}")
    assert err <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("name", ZOO_EMBEDDERS)
def test_zoo_embedders_cpu_match_sentence_transformers(models, name):
    m = fusebert.SentenceTransformer(models / name, device="cpu")
    for case, spec in cases(name).items():
        want = golden(name, case)["sentence_embedding"]
        got = m.encode(spec["texts"], prompt_name=spec.get("prompt_name"))
        err = float(np.abs(got - want).max())
        print(f"{name}/{case} cpu max abs err {err:.2e}")
        assert got.shape == want.shape and err <= 1e-5, (case, err)


def test_cross_encoder_cpu_matches_sentence_transformers(models):
    ce = fusebert.CrossEncoder(models / "tiny-bert-crossencoder", device="cpu")
    spec = cases("tiny-bert-crossencoder")["rerank"]
    logits = golden("tiny-bert-crossencoder", "rerank")["logits"][:, 0]
    pairs = [(spec["query"], t) for t in spec["texts"]]
    scores = ce.predict(pairs)
    # one label: sentence-transformers' default activation is Sigmoid
    want = 1 / (1 + np.exp(-logits.astype(np.float64)))
    err = float(np.abs(scores - want).max())
    print(f"tiny-bert-crossencoder/rerank cpu max abs err {err:.2e}")
    assert scores.shape == (3,) and err <= 1e-5
    ranked = ce.rank(spec["query"], spec["texts"], return_documents=True)
    assert [r["corpus_id"] for r in ranked] == list(np.argsort(-logits, kind="stable"))
    assert all(r["text"] == spec["texts"][r["corpus_id"]] for r in ranked)
    assert [r["corpus_id"] for r in ce.rank(spec["query"], spec["texts"], top_k=2)] == [
        r["corpus_id"] for r in ranked[:2]
    ]
    assert ce.predict(pairs[0]).shape == ()  # one pair: one score


def test_classifier_cpu_logits_match(models):
    ce = fusebert.CrossEncoder(models / "tiny-roberta-classifier", device="cpu")
    assert ce.num_labels == 3
    for case, spec in cases("tiny-roberta-classifier").items():
        want = golden("tiny-roberta-classifier", case)["logits"]
        # several labels: Identity activation (the logits)
        got = ce.predict([[t] for t in spec["texts"]])
        err = float(np.abs(got - want).max())
        print(f"tiny-roberta-classifier/{case} cpu max abs err {err:.2e}")
        assert got.shape == want.shape and err <= 1e-5


@pytest.mark.emu
@pytest.mark.parametrize("case", ["hello", "fox", "batch3"])
def test_minilm_emulator_f16_cosine(minilm, case):
    m = _emu_minilm(minilm)
    want = golden("all-MiniLM-L6-v2", case)["sentence_embedding_l2norm"]
    gap = cos_gap(m.encode(cases("all-MiniLM-L6-v2")[case]), want)
    print(f"all-MiniLM-L6-v2/{case} emu f16 1-cos {gap:.2e}")
    assert gap <= 1e-4


_EMU = {}


def _emu_minilm(path):
    if "m" not in _EMU:
        _EMU["m"] = fusebert.SentenceTransformer(path, device="emu", precision="f16")
    return _EMU["m"]


@pytest.mark.emu
@pytest.mark.parametrize("name", ZOO_EMBEDDERS)
def test_zoo_emulator_f16_cosine(models, name):
    m = fusebert.SentenceTransformer(models / name, device="emu")
    for case, spec in cases(name).items():
        want = golden(name, case)["sentence_embedding"]
        gap = cos_gap(m.encode(spec["texts"], prompt_name=spec.get("prompt_name")), want)
        print(f"{name}/{case} emu f16 1-cos {gap:.2e}")
        assert gap <= 1e-4, (case, gap)


@pytest.mark.parametrize("name", ZOO_EMBEDDERS)
def test_same_numbers_as_the_cli(models, name, tmp_path):
    cli = cli_binary()
    if cli is None:
        pytest.skip("no CLI binary in target/ (cargo build -p fusebert-cli)")
    texts = [t for spec in cases(name).values() for t in spec["texts"]] + ["", "é ü 漢字", "word " * 300]
    out = tmp_path / "e.npy"
    subprocess.run(
        [str(cli), "embed", "--model", str(MODELS / name), "--device", "cpu", "--truncate", "--output", str(out)],
        input="\n".join(t.replace("\n", " ") for t in texts) + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
    m = fusebert.SentenceTransformer(models / name, device="cpu")
    got = m.encode(texts)
    assert np.array_equal(got, np.load(out)), "the Python API and `fusebert embed` differ"


def test_shapes_and_zero_copy(st_cpu):
    one = st_cpu.encode("Hello!")
    assert one.shape == (384,) and one.dtype == np.float32
    many = st_cpu.encode(["Hello!", "x"])
    assert many.shape == (2, 384)
    assert np.array_equal(many[0], one)
    assert many.flags.owndata is False and type(many.base).__name__ == "PySliceContainer"
    assert st_cpu.encode([]).shape == (0,)
    rows = st_cpu.encode(["a", "b"], convert_to_numpy=False)
    assert isinstance(rows, list) and len(rows) == 2 and rows[0].shape == (384,)
    assert np.array_equal(st_cpu.encode(sentences=["Hello!"])[0], one)  # the deprecated name


def test_batch_size_does_not_change_the_numbers(st_cpu):
    texts = [f"sentence number {i} " + "word " * (i % 17) for i in range(70)]
    a = st_cpu.encode(texts, batch_size=1)
    b = st_cpu.encode(texts, batch_size=32)
    c = st_cpu.encode(texts, batch_size=1000)
    assert np.array_equal(a, b) and np.array_equal(b, c)


def test_truncation_is_silent_unless_asked(st_cpu):
    long = "word " * 400
    assert st_cpu.max_seq_length == 256
    cut = st_cpu.encode(long)
    with pytest.raises(fusebert.InputTooLongError) as e:
        st_cpu.encode(long, truncate=False)
    assert isinstance(e.value, ValueError) and isinstance(e.value, fusebert.FusebertError)
    # the cut input equals the text cut at 256 tokens (254 words + [CLS] + [SEP])
    assert np.array_equal(cut, st_cpu.encode("word " * 254))
    assert not np.array_equal(cut, st_cpu.encode("word " * 253))


def test_max_seq_length_is_settable(minilm):
    m = fusebert.SentenceTransformer(minilm, device="cpu")
    m.max_seq_length = 8
    assert m.max_seq_length == 8 and m.get_max_seq_length() == 8
    assert np.array_equal(m.encode("one two three four five six seven eight nine"), m.encode("one two three four five six"))
    with pytest.raises(fusebert.InvalidInputError):
        m.max_seq_length = 100_000


def test_normalize_truncate_dim_and_similarity(models):
    m = fusebert.SentenceTransformer(models / "tiny-distilbert-mean", device="cpu")  # no Normalize module
    texts = ["A short one.", "x", "Hello world."]
    raw = m.encode(texts)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1)
    normed = m.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(normed, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    cut = m.encode(texts, truncate_dim=16)
    assert np.array_equal(cut, raw[:, :16])
    cut_n = m.encode(texts, truncate_dim=16, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(cut_n, axis=1), 1, atol=1e-6)
    m16 = fusebert.SentenceTransformer(models / "tiny-distilbert-mean", device="cpu", truncate_dim=16)
    assert m16.get_sentence_embedding_dimension() == 16 and m16.encode("x").shape == (16,)
    sim = m.similarity(raw, raw)
    assert sim.shape == (3, 3)
    np.testing.assert_allclose(np.diag(sim), 1, atol=1e-6)
    np.testing.assert_allclose(sim[0, 1], raw[0] @ raw[1] / np.linalg.norm(raw[0]) / np.linalg.norm(raw[1]), rtol=1e-5)


def test_prompts(models):
    m = fusebert.SentenceTransformer(models / "tiny-roberta-cls", device="cpu")
    assert "query" in m.prompts
    texts = ["A short one.", "x"]
    by_name = m.encode(texts, prompt_name="query")
    assert np.array_equal(by_name, m.encode(texts, prompt=m.prompts["query"]))
    assert np.array_equal(by_name, m.encode_query(texts))
    assert not np.array_equal(by_name, m.encode(texts))
    with pytest.raises(ValueError):
        m.encode(texts, prompt_name="nope")


def test_unsupported_arguments_say_so(st_cpu):
    with pytest.raises(NotImplementedError):
        st_cpu.encode(["x"], output_value="token_embeddings")
    with pytest.raises(NotImplementedError):
        st_cpu.encode(["x"], precision="binary")
    with pytest.raises(TypeError):
        st_cpu.encode(["x"], no_such_argument=1)
    with pytest.raises(fusebert.InvalidInputError):
        st_cpu.encode([1, 2])


def test_progress_bar_and_callback(st_cpu):
    texts = [f"text {i}" for i in range(50)]
    seen = []
    emb = st_cpu._model.embed(texts, max_texts=8, progress=seen.append)
    assert sum(seen) == 50 and len(seen) == 7  # one call per batch of at most 8 texts
    pytest.importorskip("tqdm")
    assert np.array_equal(st_cpu.encode(texts, batch_size=8, show_progress_bar=True), emb)
