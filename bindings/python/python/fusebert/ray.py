"""Ray integration: batch inference with Ray Data and online serving with Ray Serve.

Ray Data (an actor pool, each actor loading the model once)::

    import ray
    from fusebert.ray import FusebertEmbedder

    ds = ray.data.read_parquet("docs/")                      # any read_* source with a text column
    ds = ds.map_batches(
        FusebertEmbedder,
        fn_constructor_kwargs={"model": "/models/all-MiniLM-L6-v2", "device": "cuda"},
        compute=ray.data.ActorPoolStrategy(size=4),
        num_gpus=1, batch_size=1024, batch_format="pyarrow",
    )
    ds.write_parquet("emb/")

Ray Serve (dynamic batching: concurrent requests are embedded in one call)::

    from ray import serve
    from fusebert.ray import serve_app
    handle = serve.run(serve_app("/models/all-MiniLM-L6-v2", num_replicas=2))
    vector = await handle.embed.remote("some text")          # or POST {"text": ...} over HTTP

See docs/scale-out.md.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np
import pyarrow as pa

from ._st import SentenceTransformer

__all__ = ["FusebertEmbedder", "FusebertDeployment", "serve_app"]


def _threads(threads: int | None) -> int | None:
    """Ray sets OMP_NUM_THREADS to a worker's CPUs; rayon ignores it, so pass it on (two actors
    each using every core would oversubscribe the machine)."""
    if threads is not None:
        return threads
    for var in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


class FusebertEmbedder:
    """A callable class for ``Dataset.map_batches``: adds an ``embedding`` column
    (``fixed_size_list<float>[dim]``, a plain Arrow/Parquet type) to each batch, the embeddings of
    its ``text`` column by ``SentenceTransformer(model, device=..., ...).encode``.

    Batches may come as ``pyarrow.Table`` (``batch_format="pyarrow"``) or a dict of NumPy arrays;
    the same kind is returned. Every other column (an id, say) passes through.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        precision: str | None = None,
        threads: int | None = None,
        text_column: str = "text",
        embedding_column: str = "embedding",
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
    ) -> None:
        self.model = SentenceTransformer(model, device=device, precision=precision, threads=_threads(threads))
        self.text_column, self.embedding_column = text_column, embedding_column
        self.encode_kwargs = {
            "normalize_embeddings": normalize_embeddings,
            "truncate_dim": truncate_dim,
            "prompt_name": prompt_name,
            "prompt": prompt,
        }

    def embed(self, texts: list[str]) -> np.ndarray:
        """``[len(texts), dim]`` float32 (hook for subclasses)."""
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        return self.model.encode(texts, batch_size=len(texts), **self.encode_kwargs)

    def __call__(self, batch: pa.Table | dict[str, np.ndarray]) -> pa.Table | dict[str, np.ndarray]:
        if isinstance(batch, pa.Table):
            texts = batch.column(self.text_column).to_pylist()
            emb = self.embed(texts)
            column = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), type=pa.float32()), emb.shape[1])
            return batch.append_column(self.embedding_column, column)
        texts = [str(t) for t in batch[self.text_column]]
        out = dict(batch)
        out[self.embedding_column] = self.embed(texts)
        return out


class FusebertDeployment:
    """A Ray Serve deployment class embedding single texts, batched across concurrent requests
    by ``@serve.batch``. Use :func:`serve_app` to bind it with options."""

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        precision: str | None = None,
        threads: int | None = None,
        normalize_embeddings: bool = False,
        max_batch_size: int = 64,
        batch_wait_timeout_s: float = 0.005,
    ) -> None:
        self.model = SentenceTransformer(model, device=device, precision=precision, threads=_threads(threads))
        self.normalize = normalize_embeddings
        self.batch_sizes: list[int] = []
        self._embed_batch.set_max_batch_size(max_batch_size)
        self._embed_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def embed(self, text: str) -> list[float]:
        """The embedding of one text (batched with concurrent calls)."""
        return await self._embed_batch(text)

    async def _embed_batch_impl(self, texts: list[str]) -> list[list[float]]:
        self.batch_sizes.append(len(texts))
        # blocking call in a thread (the GIL is released inside), so the event loop keeps
        # accepting requests and filling the next batch
        emb = await asyncio.to_thread(
            self.model.encode, list(texts), batch_size=len(texts), normalize_embeddings=self.normalize
        )
        return emb.tolist()

    async def __call__(self, request: Any) -> dict[str, Any]:
        """HTTP: ``POST {"text": "..."}`` -> ``{"embedding": [...]}``."""
        body = await request.json()
        return {"embedding": await self.embed(body["text"])}

    def stats(self) -> dict[str, Any]:
        """The sizes of the batches this replica ran (for tests and tuning)."""
        return {"pid": os.getpid(), "batch_sizes": list(self.batch_sizes)}

    def check_health(self) -> None:
        """Serve replaces a replica whose check raises."""
        self.model.encode(["ping"])


def _deployment_class():
    from ray import serve

    class _Deployment(FusebertDeployment):
        @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
        async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
            return await self._embed_batch_impl(texts)

    _Deployment.__name__ = _Deployment.__qualname__ = "FusebertDeployment"
    return _Deployment


def serve_app(
    model: str | None = None,
    *,
    num_replicas: int = 1,
    device: str | None = None,
    precision: str | None = None,
    threads: int | None = None,
    normalize_embeddings: bool = False,
    max_batch_size: int = 64,
    batch_wait_timeout_s: float = 0.005,
    ray_actor_options: dict[str, Any] | None = None,
    max_ongoing_requests: int | None = None,
    name: str = "fusebert",
):
    """A bound Ray Serve application (``serve.run(serve_app(...))``). ``max_ongoing_requests``
    defaults to ``4 * max_batch_size`` (Serve's default of 5 would keep batches from filling)."""
    from ray import serve

    deployment = serve.deployment(
        _deployment_class(),
        name=name,
        num_replicas=num_replicas,
        max_ongoing_requests=max_ongoing_requests or 4 * max_batch_size,
        ray_actor_options=ray_actor_options or {"num_cpus": 1},
    )
    return deployment.bind(
        model, device, precision, threads, normalize_embeddings, max_batch_size, batch_wait_timeout_s
    )
