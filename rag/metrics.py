"""Prometheus metrics: every metric of the service, in one place.

The code paths call the small hooks below (``DocumentTimer``, ``observe_*``,
``count_*``); nothing else in the project imports ``prometheus_client``. The
metrics live in one registry of this module (``REGISTRY``), cumulative for the
life of the process, as Prometheus expects. Gauges that describe state (queue
depth, documents by status, model processes and their restarts) are read at
scrape time from the objects that hold that state (``StateCollector``).

Where they are served: ``GET /metrics`` of the API process; in split mode each
``rag worker`` serves its own (ingestion) metrics on ``RAG_WORKER_METRICS_PORT``
(``start_worker_metrics_server``), since every worker process counts its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "DocumentTimer",
    "StateCollector",
    "add_chunks",
    "count_document",
    "count_reindex_run",
    "document_task",
    "observe_generation",
    "observe_request",
    "render",
    "stage",
    "start_worker_metrics_server",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

HTTP_DURATION = Histogram(
    "rag_http_request_duration_seconds",
    "Time from request to the end of the response (streams included), by route template and status.",
    ["method", "route", "status"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
HTTP_BUSY = Counter(
    "rag_http_busy_rejections_total",
    "Requests refused with 429 (the model queue was full), by route template.",
    ["route"],
    registry=REGISTRY,
)
INGEST_STAGE = Histogram(
    "rag_ingest_stage_seconds",
    "Time one document spent in each indexing stage (parse, chunk, embed, upsert).",
    ["stage"],
    buckets=_STAGE_BUCKETS,
    registry=REGISTRY,
)
INGEST_DOCUMENT = Histogram(
    "rag_ingest_document_seconds",
    "Time to index one document, from the task's start to its outcome.",
    ["outcome"],
    buckets=_STAGE_BUCKETS,
    registry=REGISTRY,
)
INGEST_IN_PROGRESS = Gauge(
    "rag_ingest_tasks_in_progress", "Documents being indexed by this process now.", registry=REGISTRY
)
DOCUMENTS = Counter(
    "rag_documents_processed_total",
    "Documents indexing ended with: indexed, failed, skipped (deleted meanwhile) or retry (a backend was down).",
    ["outcome"],
    registry=REGISTRY,
)
CHUNKS = Counter(
    "rag_chunks_processed_total",
    "Chunks of documents that were indexed, or that were lost with a document that failed after chunking.",
    ["outcome"],
    registry=REGISTRY,
)
REINDEX_RUNS = Counter(
    "rag_reindex_runs_total",
    "Re-index runs finished, by kind and outcome (succeeded, rejected, failed, skipped…).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
TTFT = Histogram(
    "rag_generation_time_to_first_token_seconds",
    "From the model taking the request to its first token (prompt evaluation).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
TOKENS_PER_S = Histogram(
    "rag_generation_tokens_per_second",
    "Decoding speed of one answer (tokens after the first over their time).",
    buckets=(1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500),
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "rag_model_queue_wait_seconds",
    "Time a request waited for a free model sequence slot.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
TOKENS = Counter(
    "rag_generation_tokens_total", "Tokens through the model, by kind (prompt, completion).", ["kind"],
    registry=REGISTRY,
)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_DURATION.labels(method, route, str(status)).observe(seconds)
    if status == 429:
        HTTP_BUSY.labels(route).inc()


def observe_generation(timings: Mapping[str, float], usage: Mapping[str, int]) -> None:
    """One finished generation, from the timings and usage the service reports."""
    if "time_to_first_token_s" in timings:
        TTFT.observe(timings["time_to_first_token_s"])
    if "decode_tokens_per_s" in timings:
        TOKENS_PER_S.observe(timings["decode_tokens_per_s"])
    if "queue_s" in timings:
        QUEUE_WAIT.observe(timings["queue_s"])
    for kind in ("prompt", "completion"):
        if f"{kind}_tokens" in usage:
            TOKENS.labels(kind).inc(usage[f"{kind}_tokens"])


def count_document(outcome: str, chunks: int = 0) -> None:
    DOCUMENTS.labels(outcome).inc()
    if chunks and outcome in ("indexed", "failed"):
        CHUNKS.labels(outcome).inc(chunks)


def count_reindex_run(kind: str, outcome: str) -> None:
    REINDEX_RUNS.labels(kind, outcome).inc()


class DocumentTimer:
    """Adds up one document's time per stage (embedding runs batch by batch),
    then records each stage once, when the document's outcome is known."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.stages: dict[str, float] = {}
        self.chunks = 0

    def finish(self, outcome: str, chunks: int | None = None) -> None:
        for name, seconds in self.stages.items():
            INGEST_STAGE.labels(name).observe(seconds)
        INGEST_DOCUMENT.labels(outcome).observe(time.perf_counter() - self.started)
        count_document(outcome, self.chunks if chunks is None else chunks)


_document: ContextVar[DocumentTimer | None] = ContextVar("rag_document_timer", default=None)


@contextmanager
def document_task() -> Iterator[DocumentTimer]:
    """Around one indexing task: ``stage`` and ``add_chunks`` inside it count
    for this document; the caller records the outcome with ``finish``."""
    timer = DocumentTimer()
    token = _document.set(timer)
    INGEST_IN_PROGRESS.inc()
    try:
        yield timer
    finally:
        INGEST_IN_PROGRESS.dec()
        _document.reset(token)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time a stage (parse, chunk, embed, upsert) of the document being indexed;
    outside an indexing task (a re-index run) it only runs the block."""
    timer = _document.get()
    if timer is None:
        yield
        return
    t = time.perf_counter()
    try:
        yield
    finally:
        timer.stages[name] = timer.stages.get(name, 0.0) + time.perf_counter() - t


def add_chunks(n: int) -> None:
    timer = _document.get()
    if timer is not None:
        timer.chunks += n


class _Pool(Protocol):
    models: list[Any]

    @property
    def waiting(self) -> int: ...


class StateCollector(Collector):
    """Gauges read when scraped: documents by status (queued = the ingestion
    queue's depth), generations running and waiting, model processes alive and
    their restarts."""

    def __init__(
        self,
        document_counts: Callable[[], Mapping[str, int]] | None = None,
        pool: Callable[[], _Pool | None] | None = None,
    ) -> None:
        self._document_counts = document_counts
        self._pool = pool

    def collect(self) -> Iterator[Any]:
        if self._document_counts is not None:
            docs = GaugeMetricFamily("rag_documents", "Documents by status, all collections.", labels=["status"])
            queued = 0
            try:
                counts = self._document_counts()
            except Exception as exc:  # a scrape must not fail because the DB is down
                log.warning("metrics: cannot count documents: %s", exc)
                counts = {}
            for status, n in sorted(counts.items()):
                docs.add_metric([status], n)
                queued = n if status == "queued" else queued
            yield docs
            yield GaugeMetricFamily(
                "rag_ingest_queue_depth", "Documents waiting to be indexed (status queued).", value=queued
            )
        pool = self._pool() if self._pool is not None else None
        if pool is not None:
            running = sum(int(getattr(m, "active", 0)) for m in pool.models)
            yield GaugeMetricFamily("rag_model_requests_running", "Generations running now.", value=running)
            yield GaugeMetricFamily(
                "rag_model_requests_waiting", "Generations waiting for a sequence slot.", value=pool.waiting
            )
            alive = GaugeMetricFamily("rag_model_process_up", "1 while a model instance is ready.", labels=["instance"])
            restarts = CounterMetricFamily(
                "rag_model_process_restarts", "Times a model process was started again after it died.",
                labels=["instance"],
            )
            for i, model in enumerate(pool.models):
                alive.add_metric([str(i)], 1.0 if getattr(model, "alive", True) else 0.0)
                restarts.add_metric([str(i)], float(getattr(model, "restarts", 0)))
            yield alive
            yield restarts


def render(extra: Collector | None = None) -> bytes:
    """The Prometheus text of this process's metrics, plus ``extra``'s."""
    body = generate_latest(REGISTRY)
    if extra is not None:
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(extra)
        body += generate_latest(scrape)
    return body


def start_worker_metrics_server(port: int, host: str = "0.0.0.0") -> bool:
    """Serve this process's metrics on ``host:port`` (a thread); False when the
    port is taken (another worker on this host), which only loses metrics."""
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        log.warning("worker metrics not served: port %d: %s", port, exc)
        return False
    log.info("worker metrics on http://%s:%d/metrics", host, port)
    return True
