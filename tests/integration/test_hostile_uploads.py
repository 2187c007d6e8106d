"""Hostile uploads against a real `rag serve`: decompression bombs, a parse that
never ends, pathological text. Each fails (or is indexed) alone, with its limit
named; the worker stays up; other documents, of the same upload and of other
collections, are indexed meanwhile; the API process stays small; deleting a
collection stops its running parse.

The model is not loaded (ingestion only); limits are lowered so the bombs stay
small on disk. bench/reliability.py runs the same inputs at full size.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.docmaker import make_document
from tests.support.hostile import huge_line, no_spaces, office_bomb, office_element_bomb, pdf_bomb, pdf_slow
from tests.support.service import ServiceProcess, child_pids, running, upload, wait_for, wait_indexed

pytestmark = pytest.mark.slow

# Peak resident size of the API process (embedder, store, worker threads) over
# the whole module, bombs included. Measured: see docs/reliability.md.
API_PEAK_RSS_MB = 2048
TIMEOUT_S = 20


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("hostile")
    env = {
        "RAG_DATA_DIR": str(root / "data"),
        "RAG_LLM_LOAD": "false",
        "RAG_PARSE_TIMEOUT_S": str(TIMEOUT_S),
        "RAG_PARSE_MEMORY_MB": "512",
        "RAG_PARSE_MAX_DECOMPRESSED_MB": "64",
        # the element bomb compresses 1000:1; let it reach the memory limit
        "RAG_PARSE_MAX_COMPRESSION_RATIO": "1e9",
    }
    with running("serve", env, root / "serve.log") as proc:
        yield proc


def _normal(directory: Path, name: str, fact: str) -> Path:
    return make_document("md", directory, name=name, title="Normal", paragraphs=[f"The answer is {fact}."])


def _statuses(client: httpx.Client, collection: str) -> dict[str, dict[str, Any]]:
    return {d["filename"]: d for d in client.get(f"/v1/collections/{collection}/documents").json()}


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _parse_children(service: ServiceProcess) -> list[int]:
    servers = child_pids(service.proc.pid, "forkserver")
    return [pid for server in servers for pid in child_pids(server)]


def test_a_parse_that_never_ends_does_not_hold_up_other_documents(
    client: httpx.Client, service: ServiceProcess, tmp_path: Path
) -> None:
    for name in ("slowpoke", "bystander"):
        assert client.post("/v1/collections", json={"name": name}).status_code == 201
    slow = pdf_slow(tmp_path / "slow.pdf", operations=600_000)
    r = upload(client, "slowpoke", [slow])
    assert r.status_code == 202, r.text
    wait_for(
        lambda: _statuses(client, "slowpoke")["slow.pdf"]["status"] == "processing",
        timeout=120,
        what="the slow parse to start",
    )
    started = time.monotonic()
    normal = _normal(tmp_path, "normal.md", "LANTERN-1")
    same_upload = upload(client, "slowpoke", [normal]).json()["documents"][0]["id"]
    other = upload(client, "bystander", [_normal(tmp_path / "b", "other.md", "LANTERN-2")]).json()["documents"][0]["id"]
    wait_indexed(client, "bystander", [other], timeout=TIMEOUT_S * 3)
    wait_indexed(client, "slowpoke", [same_upload], timeout=TIMEOUT_S * 3)
    docs = _statuses(client, "slowpoke")
    assert (
        docs["normal.md"]["status"] == "indexed" and _statuses(client, "bystander")["other.md"]["status"] == "indexed"
    )
    # ...while the slow one was still being parsed
    assert docs["slow.pdf"]["status"] == "processing" or time.monotonic() - started < TIMEOUT_S
    (slow_doc,) = wait_indexed(client, "slowpoke", [docs["slow.pdf"]["id"]], timeout=TIMEOUT_S * 4)
    assert slow_doc["status"] == "failed"
    # pdfminer keeps every operation it read: on a fast machine the parse may
    # reach the memory limit before the time limit; either way a limit is named.
    error = slow_doc["error"]
    assert ("time limit" in error and "RAG_PARSE_TIMEOUT_S" in error) or (
        "memory limit of 512 MB" in error and "RAG_PARSE_MEMORY_MB" in error
    ), error


def test_bombs_and_pathological_text_in_one_upload(
    client: httpx.Client, service: ServiceProcess, tmp_path: Path
) -> None:
    assert client.post("/v1/collections", json={"name": "bombs"}).status_code == 201
    files = [
        pdf_bomb(tmp_path / "bomb.pdf", inflated_mb=100),
        *(office_bomb(tmp_path / fmt, fmt, inflated_mb=100) for fmt in ("docx", "xlsx", "pptx")),
        office_element_bomb(tmp_path / "elements", paragraphs=5_000_000),
        # 200 KB each here (indexing a 1.1 MB line embeds ~1,000 chunks: minutes on
        # a busy 2-core runner); bench/reliability.py runs the 1.1 MB ones.
        huge_line(tmp_path / "huge-line.txt", size=200_000),
        no_spaces(tmp_path / "no-spaces.txt", size=200_000),
        _normal(tmp_path, "normal.md", "LANTERN-3"),
    ]
    assert sum(f.stat().st_size for f in files) < 4_000_000
    r = upload(client, "bombs", files)
    assert r.status_code == 202, r.text
    ids = [d["id"] for d in r.json()["documents"]]
    done = {d["filename"]: d for d in wait_indexed(client, "bombs", ids, timeout=600)}
    for name in ("bomb.pdf", "bomb-100mb.docx", "bomb-100mb.xlsx", "bomb-100mb.pptx"):
        assert done[name]["status"] == "failed", done[name]
        assert "decompressed-size limit" in done[name]["error"], done[name]
    element_bomb = done["elements-5000000.docx"]
    assert element_bomb["status"] == "failed" and "memory limit" in element_bomb["error"], element_bomb
    for name in ("huge-line.txt", "no-spaces.txt", "normal.md"):
        assert done[name]["status"] == "indexed", done[name]
    # no chunk is bigger than the chunk bound, whatever the text
    hits = client.post("/v1/collections/bombs/search", json={"query": "xxxxxxxx", "top_k": 10}).json()["results"]
    assert hits and max(len(h["text"]) for h in hits) <= 256 * 10
    assert client.get("/readyz").status_code == 200
    peak = _peak_rss_mb(service.proc.pid)
    print(f"API process peak RSS: {peak:.0f} MB")
    assert peak < API_PEAK_RSS_MB


def test_deleting_a_collection_stops_its_running_parse(
    client: httpx.Client, service: ServiceProcess, tmp_path: Path
) -> None:
    assert client.post("/v1/collections", json={"name": "doomed"}).status_code == 201
    r = upload(client, "doomed", [pdf_slow(tmp_path / "doomed.pdf", operations=600_000)])
    assert r.status_code == 202, r.text
    wait_for(lambda: _parse_children(service), timeout=120, interval=0.1, what="the parse child")
    deleted = time.monotonic()
    assert client.delete("/v1/collections/doomed").status_code == 204
    wait_for(lambda: not _parse_children(service), timeout=10, interval=0.1, what="the parse to be killed")
    assert time.monotonic() - deleted < 5
    # the worker goes on
    assert client.post("/v1/collections", json={"name": "after"}).status_code == 201
    after = upload(client, "after", [_normal(tmp_path, "after.md", "LANTERN-4")]).json()["documents"][0]["id"]
    assert wait_indexed(client, "after", [after], timeout=120)[0]["status"] == "indexed"
