"""Logs (JSON lines, request id), metrics (hooks, scrape-time gauges) and the
HTTP middleware that ties a request id and a latency to every request."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.auth import AuthMiddleware
from api.errors import install_error_handlers
from api.observability import ObservabilityMiddleware, router
from rag import metrics
from rag.errors import BusyError
from rag.logs import configure_logging, current_log_format, current_request_id, request_scope, valid_request_id


def sample(name: str, labels: dict[str, str] | None = None, body: bytes | None = None) -> float:
    """The value of one sample in the Prometheus text (0 when absent)."""
    text = (body if body is not None else metrics.render()).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                return float(s.value)
    return 0.0


@pytest.fixture
def log_stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):  # JSON mode sets them; undone after
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("json", "INFO", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_the_request_id_and_extras(log_stream: io.StringIO) -> None:
    log = logging.getLogger("rag.test")
    with request_scope("req-1"):
        log.info("hello %s", "world", extra={"document_id": "d1"})
    log.warning("outside")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    first, second, third = lines(log_stream)
    assert first["message"] == "hello world" and first["request_id"] == "req-1"
    assert first["document_id"] == "d1" and first["level"] == "info" and first["logger"] == "rag.test"
    assert "request_id" not in second
    assert "ValueError: boom" in third["exception"]
    assert current_log_format() == "json"  # what child processes are told to write


def test_text_format_is_the_default() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    try:
        configure_logging(stream=stream)
        with request_scope("abc"):
            logging.getLogger("rag.test").info("plain")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert stream.getvalue().rstrip().endswith("INFO rag.test [abc]: plain")


def test_request_ids_from_outside_are_checked() -> None:
    assert valid_request_id("upload-42.a:b") == "upload-42.a:b"
    assert valid_request_id("x" * 129) is None
    assert valid_request_id("bad id\n") is None
    assert valid_request_id(None) is None


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)

    @app.get("/items/{item}")
    async def item(item: str) -> dict[str, Any]:
        logging.getLogger("rag.test").info("serving %s", item)
        return {"item": item, "request_id": current_request_id()}

    @app.get("/busy")
    async def busy() -> None:
        raise BusyError("full", retry_after=3)

    app.add_middleware(AuthMiddleware, enabled=False, docs_open=False)  # /metrics needs a caller
    app.add_middleware(ObservabilityMiddleware)
    return app


def test_middleware_sets_returns_and_logs_the_request_id(log_stream: io.StringIO) -> None:
    with TestClient(_app()) as client:
        given = client.get("/items/a", headers={"X-Request-ID": "client-7"})
        made = client.get("/items/b")
        refused = client.get("/items/c", headers={"X-Request-ID": "no spaces allowed"})
    assert given.headers["x-request-id"] == "client-7" == given.json()["request_id"]
    assert len(made.headers["x-request-id"]) == 32 and made.json()["request_id"] == made.headers["x-request-id"]
    assert refused.headers["x-request-id"] != "no spaces allowed"
    mine = [entry for entry in lines(log_stream) if entry.get("request_id") == "client-7"]
    assert [e["message"] for e in mine] == ["serving a", "GET /items/a 200 " + mine[1]["message"].split()[-1]]
    assert mine[1]["route"] == "/items/{item}" and mine[1]["status"] == 200


def test_latency_per_route_template_and_429s() -> None:
    labels = {"method": "GET", "route": "/items/{item}", "status": "200"}
    before = sample("rag_http_request_duration_seconds_count", labels)
    busy_before = sample("rag_http_busy_rejections_total", {"route": "/busy"})
    with TestClient(_app()) as client:
        client.get("/items/x")
        client.get("/items/y")
        assert client.get("/busy").status_code == 429
        body = client.get("/metrics")
    assert body.headers["content-type"].startswith("text/plain")
    assert sample("rag_http_request_duration_seconds_count", labels, body.content) == before + 2
    assert sample("rag_http_busy_rejections_total", {"route": "/busy"}, body.content) == busy_before + 1


def test_document_timer_records_stages_outcomes_and_chunks() -> None:
    before = {
        "parse": sample("rag_ingest_stage_seconds_count", {"stage": "parse"}),
        "embed": sample("rag_ingest_stage_seconds_count", {"stage": "embed"}),
        "indexed": sample("rag_documents_processed_total", {"outcome": "indexed"}),
        "failed": sample("rag_documents_processed_total", {"outcome": "failed"}),
        "chunks": sample("rag_chunks_processed_total", {"outcome": "indexed"}),
        "lost": sample("rag_chunks_processed_total", {"outcome": "failed"}),
    }
    with metrics.document_task() as timer:
        with metrics.stage("parse"):
            pass
        for _ in range(3):  # batches add up to one observation per document
            with metrics.stage("embed"):
                pass
        assert sample("rag_ingest_tasks_in_progress") >= 1
        timer.finish("indexed", chunks=12)
    with metrics.document_task() as timer:
        metrics.add_chunks(5)
        timer.finish("failed")
    with metrics.stage("parse"):  # outside a task (a re-index run): nothing recorded
        pass
    assert sample("rag_ingest_stage_seconds_count", {"stage": "parse"}) == before["parse"] + 1
    assert sample("rag_ingest_stage_seconds_count", {"stage": "embed"}) == before["embed"] + 1
    assert sample("rag_documents_processed_total", {"outcome": "indexed"}) == before["indexed"] + 1
    assert sample("rag_documents_processed_total", {"outcome": "failed"}) == before["failed"] + 1
    assert sample("rag_chunks_processed_total", {"outcome": "indexed"}) == before["chunks"] + 12
    assert sample("rag_chunks_processed_total", {"outcome": "failed"}) == before["lost"] + 5


def test_generation_and_reindex_hooks() -> None:
    ttft = sample("rag_generation_time_to_first_token_seconds_count")
    runs = sample("rag_reindex_runs_total", {"kind": "full", "outcome": "rejected"})
    completion = sample("rag_generation_tokens_total", {"kind": "completion"})
    metrics.observe_generation(
        {"queue_s": 0.01, "time_to_first_token_s": 0.2, "decode_tokens_per_s": 40.0},
        {"prompt_tokens": 100, "completion_tokens": 20},
    )
    metrics.count_reindex_run("full", "rejected")
    assert sample("rag_generation_time_to_first_token_seconds_count") == ttft + 1
    assert sample("rag_generation_tokens_total", {"kind": "completion"}) == completion + 20
    assert sample("rag_reindex_runs_total", {"kind": "full", "outcome": "rejected"}) == runs + 1


class _Model:
    def __init__(self, alive: bool, restarts: int, active: int) -> None:
        self.alive = alive
        self.restarts = restarts
        self.active = active


class _Pool:
    def __init__(self) -> None:
        self.models = [_Model(True, 0, 2), _Model(False, 3, 0)]
        self.waiting = 1


def test_state_is_read_at_scrape_time() -> None:
    counts = {"queued": 4, "processing": 1, "indexed": 9, "failed": 0}
    body = metrics.render(metrics.StateCollector(document_counts=lambda: counts, pool=_Pool))
    assert sample("rag_ingest_queue_depth", body=body) == 4
    assert sample("rag_documents", {"status": "indexed"}, body) == 9
    assert sample("rag_model_requests_running", body=body) == 2
    assert sample("rag_model_requests_waiting", body=body) == 1
    assert sample("rag_model_process_up", {"instance": "1"}, body) == 0
    assert sample("rag_model_process_restarts_total", {"instance": "1"}, body) == 3


def test_a_failing_count_does_not_fail_the_scrape() -> None:
    def broken() -> dict[str, int]:
        raise RuntimeError("database down")

    body = metrics.render(metrics.StateCollector(document_counts=broken))
    assert b"rag_ingest_queue_depth 0.0" in body


def test_worker_metrics_server_serves_and_tolerates_a_taken_port() -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.listen()
        assert metrics.start_worker_metrics_server(port, host="127.0.0.1") is False
    assert metrics.start_worker_metrics_server(port, host="127.0.0.1") is True
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert b"rag_documents_processed_total" in r.read()
    assert threading.active_count() >= 2
