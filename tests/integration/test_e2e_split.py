"""The whole path over HTTP in split mode: `rag api` and `rag worker` as separate
processes, Redis as the Celery broker, PostgreSQL as the registry, and a Qdrant
server reached by URL by both processes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_service
from tests.docmaker import make_all
from tests.support.qdrant_server import run_qdrant_server
from tests.support.service import ServiceProcess, free_port, upload, wait_indexed

pytestmark = [pytest.mark.slow, pytest.mark.split]

REDIS_DB = 14


@pytest.fixture
def postgres_url() -> Iterator[str]:
    require_service("PostgreSQL", 5432)
    import psycopg

    name = f"rag_test_{uuid.uuid4().hex[:10]}"
    admin = "postgresql://postgres@127.0.0.1:5432/test"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", 6379)
    import redis

    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    return f"redis://127.0.0.1:6379/{REDIS_DB}"


def test_split_mode_end_to_end(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    docs = make_all(tmp_path)
    with run_qdrant_server(tmp_path) as qdrant_url:
        env = {
            "RAG_DATA_DIR": str(tmp_path / "data"),
            "RAG_BROKER_URL": redis_url,
            "RAG_DATABASE_URL": postgres_url,
            "RAG_QDRANT_URL": qdrant_url,
            "RAG_LLM_N_CTX": "2048",
        }
        api = ServiceProcess("api", env, tmp_path / "api.log", port=free_port())
        worker = ServiceProcess("worker", env, tmp_path / "worker.log")
        try:
            api.wait_ready()
            with api.client() as c:
                assert c.post("/v1/collections", json={"name": "split"}).status_code == 201
                items = upload(c, "split", [p for p, _, _ in docs.values()]).json()["documents"]
                done = wait_indexed(c, "split", [i["id"] for i in items])
                assert [d["status"] for d in done] == ["indexed"] * len(docs), done
                info = c.get("/v1/collections/split").json()
                assert info["points"] == info["chunks"] > 0

                path, question, answer = docs["pptx"]
                body = c.post("/v1/collections/split/ask", json={"question": question, "max_tokens": 16}).json()
                assert body["grounded"] and body["sources"][0]["filename"] == path.name
                assert answer in body["sources"][0]["text"]

                doc_id = items[0]["id"]
                assert c.delete(f"/v1/collections/split/documents/{doc_id}").status_code == 204
                assert c.get("/v1/collections/split").json()["points"] == info["points"] - done[0]["chunk_count"]
        finally:
            api.stop()
            worker.stop()
        assert "rag.index_document" in worker.log()
