"""LlamaIndex integration: ``FusebertEmbedding`` (a ``llama_index.core.embeddings.BaseEmbedding``).

    from fusebert.llama_index import FusebertEmbedding
    Settings.embed_model = FusebertEmbedding(model_name="/models/bge-small", device="cpu")

``query_instruction`` / ``text_instruction`` are prepended as prompts (pooling skips their
tokens when the folder says ``include_prompt: false``); ``normalize`` as
``encode(normalize_embeddings=...)``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.embeddings import BaseEmbedding
from pydantic import Field, PrivateAttr

from ._st import SentenceTransformer

__all__ = ["FusebertEmbedding"]


class FusebertEmbedding(BaseEmbedding):
    """Embeddings by a fusebert :class:`~fusebert.SentenceTransformer`."""

    device: str | None = Field(default=None, description="cpu, cuda, cuda:N or emu (None: cuda if present)")
    precision: str | None = Field(default=None, description="f32 (cpu), f16 or int8 (devices)")
    threads: int | None = Field(default=None, description="CPU threads (None: every core)")
    normalize: bool = Field(default=True, description="L2-normalise the embeddings")
    query_instruction: str | None = Field(default=None, description="prompt in front of queries")
    text_instruction: str | None = Field(default=None, description="prompt in front of documents")
    _model: SentenceTransformer = PrivateAttr()

    def __init__(self, model_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(model_name=model_name or "fusebert-default", **kwargs)
        self._model = SentenceTransformer(model_name, device=self.device, precision=self.precision, threads=self.threads)

    @classmethod
    def class_name(cls) -> str:
        return "FusebertEmbedding"

    def _encode(self, texts: list[str], prompt: str | None) -> list[list[float]]:
        return self._model.encode(
            texts, prompt=prompt, batch_size=self.embed_batch_size, normalize_embeddings=self.normalize
        ).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encode([query], self.query_instruction)[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._encode([text], self.text_instruction)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._encode(list(texts), self.text_instruction) if texts else []

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)
