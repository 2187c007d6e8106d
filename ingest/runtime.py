"""Wiring: builds each process's objects once from one ``Settings``.

Every process of the service (``rag serve``, ``rag api``, ``rag worker``,
``rag beat``) starts here, so the API and the worker always see the same
registry, store, embedder and queue configuration. Heavy objects are created
once per process, never per request or per task.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from celery import Celery

from ingest.parsing import is_supported
from ingest.pipeline import Indexer
from ingest.queue import EmbeddedWorker, IngestQueue, create_celery_app, register_tasks
from rag.blobs import BlobStore
from rag.embedder import Embedder
from rag.errors import BackendError, ConfigurationError
from rag.llm import ModelPool, load_models
from rag.prompt import ResolvedPromptStyle
from rag.registry import DocumentStatus, Registry
from rag.service import RagService
from rag.settings import BUNDLED_LLM, Settings
from rag.store import VectorStore

__all__ = ["Role", "Runtime", "build_runtime", "resolve_prompt_style"]

log = logging.getLogger(__name__)

Role = Literal["serve", "api", "worker"]


def resolve_prompt_style(settings: Settings) -> ResolvedPromptStyle:
    if settings.llm_prompt_style != "auto":
        return settings.llm_prompt_style
    # The bundled Gemma 3 270M is a base model: plain completion prompts answer
    # far better than its (absent) chat template; see docs/benchmarks.md.
    return "completion" if settings.llm_model == BUNDLED_LLM else "gemma-chat"


@dataclass
class Runtime:
    settings: Settings
    registry: Registry
    store: VectorStore
    embedder: Embedder
    blobs: BlobStore
    indexer: Indexer
    celery: Celery
    queue: IngestQueue
    service: RagService
    pool: ModelPool | None = None
    worker: EmbeddedWorker | None = None
    closed: bool = field(default=False, init=False)

    def start_worker(self) -> None:
        """Start the in-process worker (embedded mode), after re-queueing work
        that a crash interrupted mid-way."""
        if self.worker is not None:
            return
        self.recover_interrupted()
        self.worker = EmbeddedWorker(self.celery)
        self.worker.start()

    def recover_interrupted(self) -> None:
        # Only the embedded worker may do this: it is the only worker, so a
        # document still 'processing' at start-up was cut off by a crash.
        for collection in self.registry.list_collections():
            for doc in self.registry.list_documents(collection.id):
                if doc.status is DocumentStatus.PROCESSING:
                    log.warning("re-queueing %s, interrupted while indexing", doc.filename)
                    self.registry.set_document_status(doc.id, DocumentStatus.QUEUED)
                    self.queue.enqueue(doc.id)

    def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        for name, probe in (
            ("registry", self.registry.ping),
            ("store", self.store.ping),
            ("queue", self.queue.ping),
        ):
            try:
                probe()
                checks[name] = "ok"
            except BackendError as exc:
                checks[name] = exc.message
        if self.settings.llm_load:
            checks["model"] = "ok" if self.pool is not None else "not loaded"
        if not self.settings.is_split_mode and self.settings.embedded_worker:
            checks["worker"] = "ok" if self.worker is not None and self.worker.alive else "not running"
        return checks

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.worker is not None:
            self.worker.stop()
        if self.pool is not None:
            self.pool.close()
        self.store.close()
        self.registry.close()


def build_runtime(settings: Settings, role: Role) -> Runtime:
    """``serve``: API + embedded worker; ``api``: API only (split mode);
    ``worker``: indexing only, no model."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create the data directory {settings.data_dir}: {exc}") from exc
    registry = Registry(settings.resolved_database_url)
    store = VectorStore(
        path=None if settings.qdrant_url else settings.qdrant_path,
        url=settings.qdrant_url,
        api_key=settings.qdrant_api_key,
    )
    embedder = Embedder(
        settings.embedding_model,
        device=settings.embedding_device,
        batch_size=settings.embedding_batch_size,
    )
    blobs = BlobStore(settings.blob_dir)
    indexer = Indexer(
        registry=registry,
        store=store,
        embedder=embedder,
        blobs=blobs,
        chunk_max_tokens=settings.chunk_max_tokens,
        chunk_overlap_tokens=settings.chunk_overlap_tokens,
    )
    celery = create_celery_app(settings)
    if role in ("serve", "worker"):
        register_tasks(celery, lambda: indexer)
    queue = IngestQueue(celery)

    pool: ModelPool | None = None
    if role != "worker" and settings.llm_load:
        pool = ModelPool(load_models(settings), queue_size=settings.llm_queue_size)

    service = RagService(
        registry=registry,
        store=store,
        embedder=embedder,
        blobs=blobs,
        enqueue=queue.enqueue,
        is_supported=is_supported,
        max_upload_bytes=settings.max_upload_bytes,
        score_threshold=settings.score_threshold,
        default_top_k=settings.top_k,
        default_max_tokens=settings.max_tokens,
        n_ctx=settings.llm_n_ctx,
        pool=pool,
        prompt_style=resolve_prompt_style(settings),
    )
    return Runtime(
        settings=settings,
        registry=registry,
        store=store,
        embedder=embedder,
        blobs=blobs,
        indexer=indexer,
        celery=celery,
        queue=queue,
        service=service,
        pool=pool,
    )
