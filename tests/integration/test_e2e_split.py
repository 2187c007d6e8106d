"""The whole path over HTTP in split mode: `rag api` and `rag worker` as separate
processes, Redis as the Celery broker, PostgreSQL as the registry, and a Qdrant
server reached by URL by both processes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.docmaker import make_all
from tests.support.qdrant_server import run_qdrant_server
from tests.support.service import free_port, running, split_env, upload, wait_indexed

pytestmark = [pytest.mark.slow, pytest.mark.split]


def test_split_mode_end_to_end(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    docs = make_all(tmp_path)
    with run_qdrant_server(tmp_path) as qdrant_url:
        env = split_env(
            tmp_path / "data", broker=redis_url, database=postgres_url, qdrant=qdrant_url, RAG_LLM_N_CTX="2048"
        )
        # The worker serves its own metrics and writes JSON lines with the request ids.
        metrics_port = free_port()
        worker_env = {**env, "RAG_LOG_FORMAT": "json", "RAG_WORKER_METRICS_PORT": str(metrics_port)}
        with (
            running("worker", worker_env, tmp_path / "worker.log") as worker,
            running("api", env, tmp_path / "api.log") as api,
            api.client() as c,
        ):
            assert c.post("/v1/collections", json={"name": "split"}).status_code == 201
            paths = [p for p, _, _ in docs.values()]
            items = upload(c, "split", paths, headers={"X-Request-ID": "split-up-1"}).json()["documents"]
            done = wait_indexed(c, "split", [i["id"] for i in items])
            assert [d["status"] for d in done] == ["indexed"] * len(docs), done
            info = c.get("/v1/collections/split").json()
            assert info["points"] == info["chunks"] > 0
            worker_metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
            assert f'rag_documents_processed_total{{outcome="indexed"}} {float(len(docs))}' in worker_metrics
            assert 'rag_ingest_stage_seconds_count{stage="embed"}' in worker_metrics

            path, question, answer = docs["pptx"]
            body = c.post("/v1/collections/split/ask", json={"question": question, "max_tokens": 16}).json()
            assert body["grounded"] and body["sources"][0]["filename"] == path.name
            assert answer in body["sources"][0]["text"]
            api_metrics = c.get("/metrics").text
            assert f'rag_documents{{status="indexed"}} {float(len(docs))}' in api_metrics
            assert "rag_generation_time_to_first_token_seconds_count 1.0" in api_metrics

            doc_id = items[0]["id"]
            assert c.delete(f"/v1/collections/split/documents/{doc_id}").status_code == 204
            assert c.get("/v1/collections/split").json()["points"] == info["points"] - done[0]["chunk_count"]
        assert "rag.index_document" in worker.log()
        traced = [json.loads(line) for line in worker.log_path.read_text().splitlines() if "split-up-1" in line]
        assert sum(e["message"].startswith("indexing document") for e in traced) == len(docs)
        assert sum(" indexed: " in e["message"] for e in traced) == len(docs)
