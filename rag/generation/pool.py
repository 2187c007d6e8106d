"""The model instances of a process and the pool that spreads requests over
them. ``load_models`` picks, from the settings, a child process per instance
(``ModelProcess``) or the model in this process (``LlamaModel``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from rag.errors import BusyError, ConfigurationError
from rag.generation.bundled import resolve_model_path
from rag.generation.llama import LlamaModel
from rag.generation.process import ModelProcess
from rag.generation.types import TextModel
from rag.settings import Settings

__all__ = ["ModelPool", "load_models"]


def load_models(settings: Settings) -> list[TextModel]:
    """The pool's model instances, as the settings describe them: each in a
    child process of its own (``llm_isolation="process"``, the default; see
    process.py) or in this process. Instances load concurrently."""
    path = resolve_model_path(settings)
    lora = Path(settings.llm_lora_path).expanduser() if settings.llm_lora_path else None
    if lora is not None and not lora.is_file():
        raise ConfigurationError(f"LoRA adapter {lora} does not exist")
    options: dict[str, Any] = {
        "n_ctx": settings.llm_n_ctx,
        "threads": settings.llm_threads,
        "n_gpu_layers": settings.llm_n_gpu_layers,
        "parallel": settings.llm_parallel,
        "n_batch": settings.llm_n_batch,
        "flash_attn": settings.llm_flash_attn,
        "kv_cache_type": settings.llm_kv_cache_type,
        "lora_path": lora,
        "lora_scale": settings.llm_lora_scale,
        "prompt_cache": settings.llm_prompt_cache,
        "prompt_cache_min": settings.llm_prompt_cache_min_tokens,
        "swa_full": settings.llm_swa_full,
        "gpu_argmax": settings.llm_gpu_argmax,
        "chain_steps": settings.llm_chain_steps,
        "prompt_steps": settings.llm_prompt_steps,
    }
    if settings.llm_step_trace is not None:
        options["step_trace"] = Path(settings.llm_step_trace).expanduser()
    factory: Callable[..., TextModel] = ModelProcess if settings.llm_isolation == "process" else LlamaModel
    models: list[TextModel] = []
    with concurrent.futures.ThreadPoolExecutor(settings.llm_pool_size) as executor:
        futures = [executor.submit(factory, path, **options) for _ in range(settings.llm_pool_size)]
        errors: list[BaseException] = []
        for future in futures:
            try:
                models.append(future.result())
            except BaseException as exc:
                errors.append(exc)
    if errors:
        for model in models:
            model.close()
        raise errors[0]
    return models


class ModelPool:
    """Spreads requests over model instances.

    Each instance runs up to ``parallel`` sequences at once, so at most the sum
    of those run together; at most ``queue_size`` more wait, and any beyond are
    refused with ``BusyError`` at once rather than piling up. Its counters live
    on the event loop's thread only.
    """

    def __init__(self, models: Sequence[TextModel], queue_size: int) -> None:
        if not models:
            raise ValueError("a model pool needs at least one model")
        self.models = list(models)
        self._load = {id(m): 0 for m in models}
        self.capacity = sum(int(getattr(m, "parallel", 1)) for m in models)
        self._queue_size = queue_size
        self._pending = 0
        self._semaphore: asyncio.Semaphore | None = None
        self._avg_seconds = 2.0

    @property
    def waiting(self) -> int:
        return max(0, self._pending - self.capacity)

    @property
    def model_name(self) -> str:
        return self.models[0].name

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[TextModel]:
        """A model with a free sequence slot, held for one generation."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.capacity)
        if self._pending >= self.capacity + self._queue_size:
            retry = max(1, round(self._avg_seconds * (self.waiting + 1) / self.capacity))
            raise BusyError("all models are busy and the wait queue is full", retry_after=retry)
        self._pending += 1
        try:
            async with self._semaphore:
                model = min(
                    self.models,
                    key=lambda m: self._load[id(m)] / int(getattr(m, "parallel", 1)),
                )
                self._load[id(model)] += 1
                started = time.monotonic()
                try:
                    yield model
                finally:
                    self._load[id(model)] -= 1
                    self._avg_seconds = 0.8 * self._avg_seconds + 0.2 * (time.monotonic() - started)
        finally:
            self._pending -= 1

    def close(self) -> None:
        for model in self.models:
            model.close()
