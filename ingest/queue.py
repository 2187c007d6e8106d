"""Celery adapter: the only module that talks to Celery.

Two set-ups, one code path:

- embedded (default): the broker is kombu's SQLAlchemy transport on a SQLite file
  in the data directory, and a Celery worker runs in a background thread of the
  API process (Qdrant local mode lets one process hold the store). Queued work
  is on disk, so it survives a restart of the service.
- split: a Redis broker; ``rag worker`` and ``rag beat`` run as their own
  processes beside ``rag api``.

Tasks stay thin: they call the ``Indexer`` or the ``ReindexRunner`` built by
the process's own wiring. Re-index runs have their own queue, so uploads keep
being indexed while a long run holds a worker thread.

Celery beat drives the cron schedules stored in the registry: its scheduler
(``registry_scheduler``) calls ``ReindexService.tick`` every few seconds, which
claims each due slot with a unique registry row before enqueueing its run. In
the embedded mode beat runs as a thread of the API process (``EmbeddedBeat``).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from celery import Celery

from ingest.pipeline import Indexer
from ingest.runner import ReindexRunner
from rag import metrics
from rag.errors import BackendError
from rag.logs import current_request_id, request_scope
from rag.settings import Settings

__all__ = [
    "INDEX_TASK",
    "QUEUE",
    "REINDEX_QUEUE",
    "REINDEX_TASK",
    "EmbeddedBeat",
    "EmbeddedWorker",
    "IngestQueue",
    "InlineQueue",
    "TaskQueue",
    "create_celery_app",
    "registry_scheduler",
]

log = logging.getLogger(__name__)

INDEX_TASK = "rag.index_document"
QUEUE = "rag.ingest"
REINDEX_TASK = "rag.reindex"
REINDEX_QUEUE = "rag.reindex"


def create_celery_app(settings: Settings) -> Celery:
    app = Celery("rag", broker=settings.resolved_broker_url, set_as_current=False)
    # kombu's SQLAlchemy transport hands its options to create_engine, so the
    # embedded broker takes none; Redis redelivers unacked work after an hour.
    transport_options: dict[str, Any] = {"visibility_timeout": 3600} if settings.is_split_mode else {}
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options,
        enable_utc=True,
    )
    return app


def register_tasks(
    app: Celery, indexer: Callable[[], Indexer], runner: Callable[[], ReindexRunner] | None = None
) -> None:
    """Bind the task bodies to this process's services."""

    @app.task(  # type: ignore[untyped-decorator]
        name=INDEX_TASK,
        bind=True,
        autoretry_for=(BackendError,),
        retry_backoff=True,
        retry_backoff_max=60,
        max_retries=8,
    )
    def index_document(self: Any, document_id: str) -> dict[str, Any]:
        with request_scope(_request_id(self)), metrics.document_task() as timer:
            log.info("indexing document %s", document_id)
            try:
                outcome = indexer().index_document(document_id)
            except BackendError:
                timer.finish("retry", chunks=0)
                raise
            timer.finish(outcome.status, outcome.chunks if outcome.status == "indexed" else None)
            log.info("document %s %s: %d chunks", document_id, outcome.status, outcome.chunks)
        return {"document_id": outcome.document_id, "status": outcome.status, "chunks": outcome.chunks}

    if runner is not None:

        @app.task(name=REINDEX_TASK, bind=True)  # type: ignore[untyped-decorator]
        def reindex(self: Any, run_id: str) -> dict[str, Any]:
            # No automatic retry: every outcome, failures included, is recorded on the run.
            with request_scope(_request_id(self)):
                record = runner().run(run_id)
                status = record.status.value if record else "unknown"
                metrics.count_reindex_run(record.kind if record else "unknown", status)
                log.info("re-index run %s ended %s", run_id, status)
            return {"run_id": run_id, "status": status}


def _request_id(task: Any) -> str | None:
    """The id of the request that queued this task (its ``request_id`` header)."""
    value = getattr(task.request, "request_id", None)
    if value is None:
        value = (getattr(task.request, "headers", None) or {}).get("request_id")
    return value if isinstance(value, str) else None


def _headers() -> dict[str, str]:
    request_id = current_request_id()
    return {"request_id": request_id} if request_id else {}


class TaskQueue(Protocol):
    """Where the service sends work: ``IngestQueue`` (Celery), or ``InlineQueue``."""

    def enqueue(self, document_id: str) -> None: ...

    def enqueue_run(self, run_id: str) -> None: ...

    def ping(self) -> None: ...


class InlineQueue:
    """Runs each task at once, in the caller's thread (the fast test tier and
    one-shot tools): the same task bodies as the worker, no broker, no retries."""

    def __init__(self, indexer: Callable[[], Indexer], runner: Callable[[], ReindexRunner]) -> None:
        self._indexer = indexer
        self._runner = runner

    def enqueue(self, document_id: str) -> None:
        self._indexer().index_document(document_id)

    def enqueue_run(self, run_id: str) -> None:
        self._runner().run(run_id)

    def ping(self) -> None:
        return None


class IngestQueue:
    """Sends indexing work to whichever worker serves the broker."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def enqueue(self, document_id: str) -> None:
        try:
            self.app.send_task(INDEX_TASK, args=[document_id], queue=QUEUE, headers=_headers())
        except Exception as exc:  # kombu raises transport-specific errors
            raise BackendError(f"cannot queue document {document_id}: {exc}") from exc

    def enqueue_run(self, run_id: str) -> None:
        try:
            self.app.send_task(REINDEX_TASK, args=[run_id], queue=REINDEX_QUEUE, headers=_headers())
        except Exception as exc:
            raise BackendError(f"cannot queue re-index run {run_id}: {exc}") from exc

    def ping(self) -> None:
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
        except Exception as exc:
            raise BackendError(f"the queue broker is unreachable: {exc}") from exc


class EmbeddedWorker:
    """A Celery worker in a background thread of this process (threads pool)."""

    def __init__(self, app: Celery, *, concurrency: int = 2) -> None:
        from celery.worker import WorkController

        self._controller = WorkController(
            app=app,
            hostname=f"embedded@{socket.gethostname()}",
            pool_cls="threads",
            concurrency=concurrency,
            queues=[QUEUE, REINDEX_QUEUE],
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel=logging.WARNING,
        )
        self._thread = threading.Thread(target=self._run, name="rag-embedded-worker", daemon=True)

    def _run(self) -> None:
        try:
            self._controller.start()
        except Exception:
            log.exception("the embedded Celery worker stopped")

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 30) -> None:
        self._controller.stop(in_sighandler=False, exitcode=0)
        self._thread.join(timeout)


def registry_scheduler(tick: Callable[[], object], interval_s: float) -> type[Any]:
    """A Celery beat scheduler class that, besides Celery's own (empty) schedule,
    calls ``tick`` at most every ``interval_s`` seconds: the stored cron
    schedules are evaluated there, in the registry, not in beat's config."""
    from celery.beat import Scheduler

    class RegistryScheduler(Scheduler):  # type: ignore[misc]
        _last = 0.0

        def tick(self, *args: Any, **kwargs: Any) -> float:
            now = time.monotonic()
            if now - self._last >= interval_s:
                self._last = now
                try:
                    tick()
                except Exception:
                    log.exception("checking the re-index schedules failed")
            return float(min(super().tick(*args, **kwargs), interval_s))

    return RegistryScheduler


class EmbeddedBeat:
    """Celery beat in a background thread of this process (embedded mode)."""

    def __init__(self, app: Celery, scheduler_cls: type[Any]) -> None:
        from celery.beat import EmbeddedService

        self._service = EmbeddedService(app, thread=True, scheduler_cls=scheduler_cls)

    def start(self) -> None:
        self._service.start()

    @property
    def alive(self) -> bool:
        return bool(self._service.is_alive())

    def stop(self) -> None:
        self._service.stop()
