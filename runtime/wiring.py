"""Wiring: builds each process's objects once from one ``Settings``.

Every process of the service (``rag serve``, ``rag api``, ``rag worker``,
``rag beat``) starts here, so the API and the worker always see the same
registry, store, embedder and queue configuration. Heavy objects are created
once per process, never per request or per task. ``Parts`` hands in
replacements for the outside systems (the fast test tier's fakes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from celery import Celery

from ingest.parsing import is_supported
from ingest.pipeline import Indexer
from ingest.queue import (
    QUEUE,
    REINDEX_QUEUE,
    EmbeddedBeat,
    EmbeddedWorker,
    IngestQueue,
    InlineQueue,
    TaskQueue,
    create_celery_app,
    register_tasks,
    registry_scheduler,
)
from ingest.runner import ReindexRunner
from ingest.sandbox import ProcessParser, build_parser
from rag.answering import Answering
from rag.blobs import BlobStore
from rag.embedder import Embedder, EmbedderSet, Reranker
from rag.errors import BackendError, ConfigurationError
from rag.generation import ModelPool, TextModel, load_models
from rag.intake import Intake
from rag.lexical import LexicalEncoder
from rag.prompt import ResolvedPromptStyle, detect_prompt_style
from rag.registry import Database, DocumentStatus
from rag.reindex import ReindexService
from rag.retrieval import Retriever
from rag.service import Library, RagService
from rag.settings import BUNDLED_LLM, Settings
from rag.store import VectorStore

__all__ = ["BeatRuntime", "Parts", "Role", "Runtime", "build_beat", "build_runtime", "resolve_prompt_style"]

log = logging.getLogger(__name__)

Role = Literal["serve", "api", "worker"]


def resolve_prompt_style(settings: Settings) -> ResolvedPromptStyle:
    if settings.llm_prompt_style != "auto":
        return settings.llm_prompt_style
    # The bundled Gemma 3 270M is a base model: plain completion prompts answer
    # far better than a chat template; see docs/benchmarks.md. Other GGUFs:
    # from the chat template they carry.
    if settings.llm_model == BUNDLED_LLM:
        return "completion"
    path = Path(settings.llm_model).expanduser()
    return detect_prompt_style(path) if path.is_file() else "gemma-chat"


@dataclass(frozen=True)
class Parts:
    """Outside systems handed in instead of built from the settings (tests):
    the vector store, the embedding model, the text models of the pool, and
    ``inline_tasks`` to run uploads and re-index runs in the caller's thread
    instead of sending them to Celery."""

    store: VectorStore | None = None
    embedder: Embedder | None = None
    models: Sequence[TextModel] | None = None
    reranker: Reranker | None = None
    inline_tasks: bool = False


@dataclass
class Runtime:
    settings: Settings
    registry: Database
    store: VectorStore
    embedder: Embedder
    blobs: BlobStore
    indexer: Indexer
    celery: Celery
    queue: TaskQueue
    service: RagService
    embedders: EmbedderSet
    retriever: Retriever
    reindex: ReindexService
    runner: ReindexRunner
    pool: ModelPool | None = None
    worker: EmbeddedWorker | None = None
    beat: EmbeddedBeat | None = None
    closed: bool = field(default=False, init=False)

    def start_worker(self) -> None:
        """Start the in-process worker and beat (embedded mode), after re-queueing
        work that a crash interrupted mid-way."""
        if self.worker is not None:
            return
        self.recover_interrupted()
        self.worker = EmbeddedWorker(self.celery, concurrency=self.settings.worker_concurrency)
        self.worker.start()
        self.beat = EmbeddedBeat(
            self.celery, registry_scheduler(self.reindex.tick, self.settings.scheduler_interval_s)
        )
        self.beat.start()

    def run_worker(self, concurrency: int) -> None:
        """Serve the broker's queues in this process until stopped (split mode)."""
        self.celery.Worker(
            pool_cls="threads", concurrency=concurrency, queues=[QUEUE, REINDEX_QUEUE], loglevel="INFO"
        ).start()

    def recover_interrupted(self) -> None:
        # Only the embedded worker may do this: it is the only worker, so a
        # document still 'processing' at start-up was cut off by a crash.
        with self.registry.unit_of_work() as uow:
            collections = uow.collections.list_all()
            interrupted = [
                doc
                for collection in collections
                for doc in uow.documents.list_for(collection.id)
                if doc.status is DocumentStatus.PROCESSING
            ]
        for doc in interrupted:
            log.warning("re-queueing %s, interrupted while indexing", doc.filename)
            with self.registry.unit_of_work() as uow:
                uow.documents.set_status(doc.id, DocumentStatus.QUEUED)
            self.queue.enqueue(doc.id)
        # Re-index runs cut off mid-way end 'failed'; their locks and half-built
        # versions go (queued runs are still in the broker and run normally).
        with self.registry.unit_of_work() as uow:
            uow.runs.clear_locks()
            uow.runs.fail_running("interrupted by a restart of the service")
            uow.versions.fail_building()
        for collection in collections:
            served = self.store.aliased_version(collection.id)
            with self.registry.unit_of_work() as uow:
                known = {v.version: v.status.value for v in uow.versions.list_for(collection.id)}
            for version in self.store.list_versions(collection.id):
                if version != served and known.get(version) in (None, "failed", "rejected", "dropped"):
                    self.store.drop_version(collection.id, version)

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
            if self.pool is None:
                checks["model"] = "not loaded"
            else:
                down = [m for m in self.pool.models if not getattr(m, "alive", True)]
                n = len(self.pool.models)
                checks["model"] = f"{len(down)} of {n} model processes restarting" if down else "ok"
        if not self.settings.is_split_mode and self.settings.embedded_worker:
            checks["worker"] = "ok" if self.worker is not None and self.worker.alive else "not running"
            checks["beat"] = "ok" if self.beat is not None and self.beat.alive else "not running"
        return checks

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.beat is not None:
            self.beat.stop()
        if self.worker is not None:
            self.worker.stop()
        if self.pool is not None:
            self.pool.close()
        self.indexer.close()
        self.store.close()
        self.registry.close()


def build_runtime(settings: Settings, role: Role, parts: Parts | None = None) -> Runtime:
    """``serve``: API + embedded worker; ``api``: API only (split mode);
    ``worker``: indexing only, no model."""
    parts = parts or Parts()
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create the data directory {settings.data_dir}: {exc}") from exc
    registry = Database(settings.resolved_database_url)
    store = parts.store or _store(settings)
    # A worker embeds chunks only: no copy of the model for questions.
    query_device = settings.embedding_query_device if role != "worker" else None
    embedder = parts.embedder or Embedder(
        settings.embedding_model,
        device=settings.embedding_device,
        batch_size=settings.embedding_batch_size,
        threads=settings.embedding_threads,
        backend=settings.embedding_backend,
        onnx_cache=settings.model_dir / "onnx",
        query_device=query_device,
    )
    embedders = EmbedderSet(
        embedder,
        device=settings.embedding_device,
        batch_size=settings.embedding_batch_size,
        backend=settings.embedding_backend,
        onnx_cache=settings.model_dir / "onnx",
        query_device=query_device,
    )
    blobs = BlobStore(settings.blob_dir)
    lexical = LexicalEncoder(
        k1=settings.lexical_k1, b=settings.lexical_b, avg_len=settings.resolved_lexical_avg_length
    )
    reranker = parts.reranker
    if reranker is None and role != "worker" and settings.rerank_model:
        reranker = Reranker(
            settings.rerank_model, device=settings.embedding_device, batch_size=settings.embedding_batch_size
        )
    retriever = Retriever.from_settings(
        settings, registry=registry, store=store, embedders=embedders, lexical=lexical, reranker=reranker
    )
    parser = build_parser(settings)
    if role in ("serve", "worker") and not parts.inline_tasks and isinstance(parser, ProcessParser):
        parser.start()  # the parse server imports the readers while the rest starts
    indexer = Indexer(
        parser=parser,
        registry=registry,
        store=store,
        embedder=embedder,
        blobs=blobs,
        chunk_max_tokens=settings.chunk_max_tokens,
        chunk_overlap_tokens=settings.chunk_overlap_tokens,
        lexical=lexical,
        embed_section_titles=settings.embed_section_titles,
        embedders=embedders,
        embed_batch_texts=4 * settings.embedding_batch_size,
    )
    celery = create_celery_app(settings)
    queue: TaskQueue = IngestQueue(celery) if not parts.inline_tasks else InlineQueue(lambda: indexer, lambda: runner)
    reindex = _reindex_service(settings, registry, store, queue)
    runner = ReindexRunner(
        registry=registry,
        store=store,
        blobs=blobs,
        indexer=indexer,
        embedders=embedders,
        reindex=reindex,
        is_supported=is_supported,
        max_upload_bytes=settings.max_upload_bytes,
        quality_margin=settings.quality_gate_margin,
        retriever=retriever,
    )
    if role in ("serve", "worker") and not parts.inline_tasks:
        register_tasks(celery, lambda: indexer, lambda: runner)

    pool: ModelPool | None = None
    if role != "worker" and settings.llm_load:
        models = parts.models if parts.models is not None else load_models(settings)
        pool = ModelPool(models, queue_size=settings.llm_queue_size)

    service = RagService(
        library=Library(registry=registry, store=store, blobs=blobs, embedder=embedder),
        intake=Intake(enqueue=queue.enqueue, is_supported=is_supported, max_upload_bytes=settings.max_upload_bytes),
        retriever=retriever,
        answering=Answering.from_settings(settings, pool, resolve_prompt_style(settings)),
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
        embedders=embedders,
        retriever=retriever,
        reindex=reindex,
        runner=runner,
        pool=pool,
    )


def _store(settings: Settings) -> VectorStore:
    return VectorStore.from_settings(settings)


def _reindex_service(settings: Settings, registry: Database, store: VectorStore, queue: TaskQueue) -> ReindexService:
    return ReindexService(
        registry=registry,
        store=store,
        enqueue_run=queue.enqueue_run,
        sync_roots=settings.sync_roots,
        keep_previous_s=settings.reindex_keep_previous_s,
        lock_stale_s=settings.reindex_lock_stale_s,
        misfire_grace_s=settings.schedule_misfire_grace_s,
    )


@dataclass
class BeatRuntime:
    """What `rag beat` needs: the registry (schedules, slot claims), the store
    (dropping expired versions) and the queue, but no embedder or model."""

    settings: Settings
    registry: Database
    store: VectorStore
    celery: Celery
    reindex: ReindexService

    def run(self) -> None:
        """Run Celery beat in this process until stopped."""
        scheduler = registry_scheduler(self.reindex.tick, self.settings.scheduler_interval_s)
        self.celery.Beat(loglevel="INFO", scheduler=scheduler, max_interval=5).run()

    def close(self) -> None:
        self.store.close()
        self.registry.close()


def build_beat(settings: Settings) -> BeatRuntime:
    registry = Database(settings.resolved_database_url)
    store = _store(settings)
    celery = create_celery_app(settings)
    reindex = _reindex_service(settings, registry, store, IngestQueue(celery))
    return BeatRuntime(settings=settings, registry=registry, store=store, celery=celery, reindex=reindex)
