"""LangChain (langchain-tests' standard embeddings tests, offline) and LlamaIndex."""

from __future__ import annotations

import numpy as np
import pytest

import fusebert
from conftest import MODELS

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import EmbeddingsIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import EmbeddingsUnitTests  # noqa: E402

from fusebert.langchain import FusebertEmbeddings  # noqa: E402

FIXTURE = str(MODELS / "tiny-distilbert-mean")


class TestFusebertEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[FusebertEmbeddings]:
        return FusebertEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model_name": FIXTURE, "model_kwargs": {"device": "cpu"}}


class TestFusebertEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[FusebertEmbeddings]:
        return FusebertEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model_name": FIXTURE, "model_kwargs": {"device": "cpu"}}


def test_langchain_equals_encode():
    emb = FusebertEmbeddings(model_name=FIXTURE, model_kwargs={"device": "cpu"}, encode_kwargs={"normalize_embeddings": True})
    st = fusebert.SentenceTransformer(FIXTURE, device="cpu")
    texts = ["A short one.", "x", "line one\nline two"]
    got = emb.embed_documents(texts)
    assert all(type(v) is float for row in got for v in row)
    assert got == st.encode(texts, normalize_embeddings=True).tolist()
    assert emb.embed_query("x") == got[1]


def test_llama_index_equals_encode():
    pytest.importorskip("llama_index.core")
    from fusebert.llama_index import FusebertEmbedding

    li = FusebertEmbedding(FIXTURE, device="cpu", normalize=False)
    st = fusebert.SentenceTransformer(FIXTURE, device="cpu")
    texts = ["A short one.", "x", "Hello world."]
    assert li.get_text_embedding_batch(texts) == st.encode(texts).tolist()
    assert li.get_query_embedding("x") == st.encode("x").tolist()
    assert np.allclose(li.get_text_embedding("x"), st.encode("x"))
