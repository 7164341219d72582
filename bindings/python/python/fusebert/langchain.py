"""LangChain integration: ``FusebertEmbeddings`` (a ``langchain_core.embeddings.Embeddings``).

    from fusebert.langchain import FusebertEmbeddings
    emb = FusebertEmbeddings(model_name="/models/all-MiniLM-L6-v2", model_kwargs={"device": "cpu"})
    emb.embed_documents(["a", "b"]); emb.embed_query("q")

Fields as langchain-huggingface's ``HuggingFaceEmbeddings`` (``model_name``, ``model_kwargs``,
``encode_kwargs``, ``query_encode_kwargs``, ``show_progress``), except that texts are embedded as
given (``HuggingFaceEmbeddings`` replaces newlines by spaces first). Results are lists of plain
Python floats. The async methods run the call in a thread; the GIL is released during it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from ._st import SentenceTransformer

__all__ = ["FusebertEmbeddings"]


class FusebertEmbeddings(BaseModel, Embeddings):
    """Embeddings by a fusebert :class:`~fusebert.SentenceTransformer`."""

    model_name: str | None = None
    """Model folder (``None``: ``$FUSEBERT_MODEL`` or the bundled all-MiniLM-L6-v2)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of ``SentenceTransformer`` (``device``, ``precision``, ``threads``, ...)."""
    encode_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of ``encode`` for documents (``normalize_embeddings``, ``batch_size``, ...)."""
    query_encode_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of ``encode`` for queries (default: ``encode_kwargs``)."""
    show_progress: bool = False

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    _model: SentenceTransformer = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._model = SentenceTransformer(self.model_name, **self.model_kwargs)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        kw = {"show_progress_bar": self.show_progress, **self.encode_kwargs}
        return self._model.encode(list(texts), **kw).tolist() if texts else []

    def embed_query(self, text: str) -> list[float]:
        kw = {"show_progress_bar": self.show_progress, **(self.query_encode_kwargs or self.encode_kwargs)}
        return self._model.encode([text], **kw)[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)
