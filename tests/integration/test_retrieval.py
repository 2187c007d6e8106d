"""Hybrid retrieval, filters and evaluation over HTTP against the real stack.

Each test runs twice: `rag serve` on Qdrant local mode, and `rag serve` against a
Qdrant server (the REST stand-in in tests/support/qdrant_server.py). Both must
behave the same.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.qdrant_server import run_qdrant_server
from tests.support.service import ServiceProcess, rag_cli, running, wait_indexed

pytestmark = pytest.mark.slow

# Three small documents with no words in common with each other's questions.
GLIDER = (
    "glider.txt",
    "Project Nightjar\n\nProject Nightjar builds long-range gliders for weather research. "
    "The prototype's serial number is QX7731B and it first flew over the Baltic coast.",
)
CATS = (
    "cats.md",
    "# Feline care\n\nDomestic cats sleep for around sixteen hours every day, "
    "mostly in short bursts spread across daylight.",
)
PASTA = (
    "pasta.html",
    "<html><body><h1>Cooking pasta</h1><p>Boil the spaghetti for nine minutes "
    "in plenty of salted water, then drain it and add the tomato sauce.</p></body></html>",
)


@dataclass
class Stack:
    service: ServiceProcess
    ids: dict[str, str]  # filename -> document id
    between: datetime  # after the first upload, before the others
    backend: str


@pytest.fixture(scope="module", params=["local", "server"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp(f"retrieval-{request.param}")
    env = {"RAG_DATA_DIR": str(root / "data"), "RAG_LLM_N_CTX": "2048", "RAG_MAX_TOKENS": "16"}
    with _qdrant(request.param, root) as url:
        if url:
            env["RAG_QDRANT_URL"] = url
        with running("serve", env, root / "serve.log") as proc:
            with proc.client() as c:
                assert c.post("/v1/collections", json={"name": "kb"}).status_code == 201
                first = _upload(c, [GLIDER], {"team": "red", "year": 2024, "tags": ["aviation", "research"]})
                time.sleep(1.1)
                between = datetime.now(UTC)
                time.sleep(1.1)
                rest = _upload(c, [CATS, PASTA], {"team": "blue", "year": 2023})
                ids = {**first, **rest}
                assert [d["status"] for d in wait_indexed(c, "kb", list(ids.values()))] == ["indexed"] * 3
            yield Stack(proc, ids, between, request.param)


def _qdrant(backend: str, root: Path) -> Any:
    if backend == "server":
        return run_qdrant_server(root)
    from contextlib import nullcontext

    return nullcontext(None)


def _upload(client: httpx.Client, docs: list[tuple[str, str]], metadata: dict[str, Any] | None) -> dict[str, str]:
    data = {"metadata": json.dumps(metadata)} if metadata is not None else None
    files = [("files", (name, text.encode())) for name, text in docs]
    r = client.post("/v1/collections/kb/documents", files=files, data=data)
    assert r.status_code == 202, r.text
    return {i["filename"]: i["id"] for i in r.json()["documents"]}


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.service.client() as c:
        yield c


def search(client: httpx.Client, query: str, **body: Any) -> list[dict[str, Any]]:
    r = client.post("/v1/collections/kb/search", json={"query": query, **body})
    assert r.status_code == 200, r.text
    return list(r.json()["results"])


def test_each_mode_finds_what_it_is_good_at(client: httpx.Client) -> None:
    # An identifier: only the lexical side can match it exactly.
    lexical = search(client, "QX7731B", mode="lexical")
    assert [h["filename"] for h in lexical] == ["glider.txt"]
    assert search(client, "QX7731B")[0]["filename"] == "glider.txt"  # hybrid is the default

    # A paraphrase sharing no word with the text: only the dense side can find it.
    question = "How much do kitties doze?"
    assert search(client, question, mode="lexical") == []
    assert search(client, question, mode="dense")[0]["filename"] == "cats.md"
    hybrid = search(client, question, mode="hybrid")
    assert hybrid[0]["filename"] == "cats.md"
    # Fused scores are reciprocal-rank sums, not cosines; the cosine is still given.
    assert hybrid[0]["similarity"] is not None and hybrid[0]["similarity"] > 0.2
    assert hybrid[0]["score"] != pytest.approx(hybrid[0]["similarity"])


def test_search_reports_the_cost_of_its_parts(client: httpx.Client) -> None:
    r = client.post("/v1/collections/kb/search", json={"query": "spaghetti"})
    timings = r.json()["timings"]
    assert {"embed_s", "store_s", "total_s"} <= set(timings)
    assert timings["total_s"] >= timings["embed_s"] + timings["store_s"] - 1e-6


def test_filters_narrow_search_and_ask(client: httpx.Client, stack: Stack) -> None:
    everything = {h["filename"] for h in search(client, "research cats pasta", top_k=10, mode="dense")}
    assert everything == {"glider.txt", "cats.md", "pasta.html"}

    def names(flt: dict[str, Any]) -> set[str]:
        return {h["filename"] for h in search(client, "research cats pasta", top_k=10, mode="dense", filter=flt)}

    assert names({"document_ids": [stack.ids["cats.md"]]}) == {"cats.md"}
    assert names({"filenames": ["pasta.html", "glider.txt"]}) == {"pasta.html", "glider.txt"}
    assert names({"uploaded_after": stack.between.isoformat()}) == {"cats.md", "pasta.html"}
    assert names({"uploaded_before": stack.between.isoformat()}) == {"glider.txt"}
    assert names({"metadata": {"team": "red"}}) == {"glider.txt"}
    assert names({"metadata": {"year": [2023, 2022]}}) == {"cats.md", "pasta.html"}
    assert names({"metadata": {"tags": "research"}}) == {"glider.txt"}
    assert names({"metadata": {"team": "blue"}, "filenames": ["pasta.html"]}) == {"pasta.html"}
    assert names({"metadata": {"team": "green"}}) == set()

    hit = search(client, "QX7731B", filter={"metadata": {"team": "red"}})[0]
    assert hit["metadata"] == {"team": "red", "year": 2024, "tags": ["aviation", "research"]}
    doc = client.get(f"/v1/collections/kb/documents/{stack.ids['glider.txt']}").json()
    assert doc["metadata"]["team"] == "red"

    body = {"question": "What is the serial number of the prototype?", "filter": {"filenames": ["cats.md"]}}
    r = client.post("/v1/collections/kb/ask", json=body)
    assert r.status_code == 200, r.text
    assert {s["filename"] for s in r.json()["sources"]} <= {"cats.md"}


def test_bad_metadata_and_filters_are_422_with_the_error_shape(client: httpx.Client) -> None:
    files = [("files", ("x.txt", b"some text"))]
    for raw in ("{not json", "[1, 2]", '{"bad key": 1}', '{"x": {"nested": true}}'):
        r = client.post("/v1/collections/kb/documents", files=files, data={"metadata": raw})
        assert r.status_code == 422, (raw, r.text)
        assert r.json()["error"]["code"] == "invalid_request"
        assert "metadata" in r.json()["error"]["message"]
    r = client.post("/v1/collections/kb/search", json={"query": "x", "mode": "fuzzy"})
    assert r.status_code == 422 and "error" in r.json()
    r = client.post("/v1/collections/kb/search", json={"query": "x", "filter": {"colour": "red"}})
    assert r.status_code == 422 and "error" in r.json()
    r = client.post("/v1/collections/kb/search", json={"query": "x", "rerank": True})
    assert r.status_code == 422 and "re-ranking" in r.json()["error"]["message"]


QA = [
    {"question": "What is the serial number of the Nightjar prototype?", "answers": ["QX7731B"],
     "document": "glider.txt"},
    {"question": "How many hours a day do cats sleep?", "answers": ["sixteen hours", "sixteen"],
     "document": "cats.md"},
    {"question": "How long should spaghetti boil?", "answers": ["nine minutes"], "document": "pasta.html"},
    {"question": "Who won the 1998 chess olympiad?", "answers": [], "document": None},
]  # fmt: skip


def test_evaluation_endpoint_reports_every_measure(client: httpx.Client) -> None:
    r = client.post("/v1/collections/kb/evaluations", json={"items": QA, "generate_sample": 1})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["mode"] == "hybrid"
    assert (report["questions"], report["answerable"], report["unanswerable"]) == (4, 3, 1)
    assert report["answer_recall"] == {"@1": 1.0, "@5": 1.0, "@10": 1.0}
    assert report["mrr"] == 1.0
    assert report["false_abstention"] == 0.0
    assert report["abstention"] in (0.0, 1.0)
    assert report["retrieval_latency_ms"]["p50"] > 0
    gen = report["generation"]
    assert gen["sample"] == 1 and 0 <= gen["f1"] <= 1 and 0 <= gen["exact_match"] <= 1
    assert "answer-recall@5" in report["table"] and "1.000" in report["table"]

    # A wrong document: the answer string alone does not count.
    wrong = [{**QA[0], "document": "cats.md"}]
    r = client.post("/v1/collections/kb/evaluations", json={"items": wrong, "generate_sample": 0, "mode": "lexical"})
    assert r.json()["answer_recall"]["@10"] == 0.0 and r.json()["generation"] is None

    assert client.post("/v1/collections/nope/evaluations", json={"items": QA}).status_code == 404
    assert client.post("/v1/collections/kb/evaluations", json={"items": []}).status_code == 422


def test_rag_eval_cli_prints_a_table_and_json(stack: Stack, tmp_path: Path) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps(q) for q in QA) + "\n")
    base = ["eval", str(qa), "--collection", "kb", "--url", stack.service.url]
    out = rag_cli(*base, "--generate", "0", timeout=300)
    assert out.returncode == 0, out.stderr
    assert "answer-recall@1" in out.stdout and "MRR" in out.stdout and "abstention" in out.stdout
    out = rag_cli(*base, "--generate", "0", "--json", "--mode", "dense", timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["mode"] == "dense" and data["answer_recall"]["@10"] == 1.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"answers": []}\n')
    out = rag_cli("eval", str(bad), "-c", "kb", "--url", stack.service.url, timeout=60)
    assert out.returncode == 2 and "line 1" in out.stderr
