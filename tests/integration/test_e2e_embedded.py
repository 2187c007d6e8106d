"""The whole path over HTTP against the real stack, embedded mode.

One `rag serve` process: real embedder, real Qdrant local store, real Celery
worker (in-process, SQLite broker), real llama.cpp with the bundled Gemma model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.docmaker import make_all
from tests.support.service import ServiceProcess, free_port, running, upload, wait_indexed

pytestmark = pytest.mark.slow


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {"RAG_DATA_DIR": str(data_dir), "RAG_LLM_N_CTX": "2048", "RAG_MAX_TOKENS": "32", **extra}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("embedded")
    with running("serve", _env(root / "data"), root / "serve.log") as proc:
        yield proc


def test_every_format_is_indexed_and_answers_cite_the_right_document(
    client: httpx.Client, tmp_path: Path
) -> None:
    docs = make_all(tmp_path)
    assert client.post("/v1/collections", json={"name": "formats"}).status_code == 201

    r = upload(client, "formats", [p for p, _, _ in docs.values()])
    assert r.status_code == 202, r.text
    items = r.json()["documents"]
    assert [i["status"] for i in items] == ["queued"] * len(docs)

    results = wait_indexed(client, "formats", [i["id"] for i in items])
    for doc in results:
        assert doc["status"] == "indexed", doc
        assert doc["chunk_count"] >= 1
        assert doc["indexed_at"]

    info = client.get("/v1/collections/formats").json()
    assert info["documents"] == len(docs)
    assert info["points"] == info["chunks"] == sum(d["chunk_count"] for d in results)

    for fmt, (path, question, answer) in docs.items():
        hits = client.post("/v1/collections/formats/search", json={"query": question, "top_k": 3}).json()
        top = hits["results"][0]
        assert top["filename"] == path.name, (fmt, hits)
        assert answer in top["text"]
        if fmt in ("pdf", "pptx"):
            assert top["page"] == 2

    path, question, answer = docs["docx"]
    r = client.post("/v1/collections/formats/ask", json={"question": question, "max_tokens": 24})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["grounded"] is True
    assert body["answer"]
    assert body["sources"][0]["filename"] == path.name
    assert {"document_id", "filename", "page", "text", "score"} <= set(body["sources"][0])
    assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0
    timings = body["timings"]
    assert timings["total_s"] > 0
    # The way to the model, part by part: the search (its embedding and the store) and fitting the prompt.
    assert {"retrieval_s", "search_s", "embed_s", "store_s", "prompt_s", "queue_s"} <= set(timings)
    # The search in its thread, and around it the hops to that thread and back.
    assert timings["retrieval_s"] >= timings["search_s"] >= timings["embed_s"] + timings["store_s"] - 1e-6


def test_reupload_is_a_noop_and_delete_leaves_zero_points(client: httpx.Client, tmp_path: Path) -> None:
    docs = make_all(tmp_path)
    client.post("/v1/collections", json={"name": "dedup"})
    path = docs["md"][0]
    first = upload(client, "dedup", [path]).json()["documents"][0]
    (doc,) = wait_indexed(client, "dedup", [first["id"]])
    points = client.get("/v1/collections/dedup").json()["points"]
    assert points == doc["chunk_count"] > 0

    again = upload(client, "dedup", [path]).json()["documents"][0]
    assert again["id"] == first["id"] and again["duplicate"] is True
    info = client.get("/v1/collections/dedup").json()
    assert info["documents"] == 1 and info["points"] == points

    assert client.delete(f"/v1/collections/dedup/documents/{first['id']}").status_code == 204
    assert client.get(f"/v1/collections/dedup/documents/{first['id']}").status_code == 404
    info = client.get("/v1/collections/dedup").json()
    assert info["documents"] == 0 and info["points"] == 0

    assert client.delete("/v1/collections/dedup").status_code == 204
    assert client.get("/v1/collections/dedup").status_code == 404


def test_a_broken_file_fails_alone_with_its_reason(client: httpx.Client, tmp_path: Path) -> None:
    docs = make_all(tmp_path)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 this is not really a pdf \x00\x01\x02")
    client.post("/v1/collections", json={"name": "mixed"})
    r = client.post(
        "/v1/collections/mixed/documents",
        files=[
            ("files", (broken.name, broken.read_bytes())),
            ("files", ("notes.xyz", b"what is this")),
            ("files", (docs["txt"][0].name, docs["txt"][0].read_bytes())),
        ],
    )
    assert r.status_code == 202, r.text
    items = {i["filename"]: i for i in r.json()["documents"]}
    assert items["notes.xyz"]["status"] == "rejected"
    assert items["notes.xyz"]["error"]["code"] == "unsupported_file_type"
    ids = [items["broken.pdf"]["id"], items[docs["txt"][0].name]["id"]]
    done = {d["filename"]: d for d in wait_indexed(client, "mixed", ids)}
    assert done["broken.pdf"]["status"] == "failed"
    assert "broken.pdf" in done["broken.pdf"]["error"]
    assert done[docs["txt"][0].name]["status"] == "indexed"


def test_errors_have_one_shape(client: httpx.Client) -> None:
    r = client.get("/v1/collections/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    client.post("/v1/collections", json={"name": "dup"})
    r = client.post("/v1/collections", json={"name": "dup"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_exists"
    r = client.post("/v1/collections", json={"name": "bad name!"})
    assert r.status_code == 422 and "error" in r.json()
    r = client.post("/v1/collections/dup/documents", files=[("files", ("a.exe", b"MZ"))])
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_file_type"
    r = client.post("/v1/collections/dup/ask", json={"question": ""})
    assert r.status_code == 422
    r = client.post("/v1/collections/dup/search", json={"query": "x", "top_k": 0})
    assert r.status_code == 422
    r = client.post("/v1/collections/dup/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_empty_collection_answers_without_generating(client: httpx.Client) -> None:
    client.post("/v1/collections", json={"name": "empty"})
    body = client.post("/v1/collections/empty/ask", json={"question": "What is the capital of France?"}).json()
    assert body["grounded"] is False
    assert "don't contain" in body["answer"]
    assert body["usage"] == {}


def test_health(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert set(ready["checks"]) >= {"registry", "store", "queue", "model", "worker"}
    assert client.get("/openapi.json").status_code == 200


def test_queued_uploads_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    docs = make_all(tmp_path)
    port = free_port()
    # First life: the worker is held, so uploads stay queued on disk.
    first = ServiceProcess("serve", _env(data, RAG_EMBEDDED_WORKER="false"), tmp_path / "1.log", port=port)
    try:
        first.wait_ready()
        with first.client() as c:
            c.post("/v1/collections", json={"name": "restart"})
            items = upload(c, "restart", [docs["txt"][0], docs["html"][0]]).json()["documents"]
            assert {i["status"] for i in items} == {"queued"}
    finally:
        assert first.stop() in (0, -15)
    # Second life: the worker starts and works through what was queued.
    second = ServiceProcess("serve", _env(data), tmp_path / "2.log", port=port)
    try:
        second.wait_ready()
        with second.client() as c:
            done = wait_indexed(c, "restart", [i["id"] for i in items])
            assert [d["status"] for d in done] == ["indexed", "indexed"]
            assert c.get("/v1/collections/restart").json()["points"] > 0
    finally:
        second.stop()


def test_requests_beyond_the_wait_queue_get_429(tmp_path: Path) -> None:
    """One model, no waiting room: of simultaneous asks, those that find the model
    busy are refused cleanly with Retry-After; none crashes the process."""
    import concurrent.futures

    docs = make_all(tmp_path)
    env = _env(tmp_path / "data", RAG_LLM_POOL_SIZE="1", RAG_LLM_QUEUE_SIZE="0", RAG_MAX_TOKENS="64")
    with running("serve", env, tmp_path / "serve.log") as proc:
        with proc.client() as c:
            c.post("/v1/collections", json={"name": "busy"})
            items = upload(c, "busy", [docs["txt"][0]]).json()["documents"]
            wait_indexed(c, "busy", [i["id"] for i in items])
        path, question, _ = docs["txt"]

        def ask(_: int) -> httpx.Response:
            with proc.client() as c:
                return c.post("/v1/collections/busy/ask", json={"question": question})

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(ask, range(6)))
        codes = sorted(r.status_code for r in responses)
        assert set(codes) <= {200, 429}, codes
        assert 200 in codes and 429 in codes, codes
        for r in responses:
            if r.status_code == 429:
                assert int(r.headers["Retry-After"]) >= 1
                assert r.json()["error"]["code"] == "busy"
            else:
                assert r.json()["sources"][0]["filename"] == path.name
        assert proc.proc.poll() is None
