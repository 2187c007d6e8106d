"""Re-indexing over HTTP, in process: folder sources, schedules, runs (executed
at once by the inline queue), versions, the quality gate, rollback, golden
questions, and their errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rag.settings import Settings
from runtime import Runtime
from tests.fast.helpers import upload
from tests.support.fakes import HashEmbedder

DOCS = {
    "cats.txt": "Domestic cats sleep for around sixteen hours every day.",
    "rome.txt": "Rome is the capital of Italy and was founded on seven hills.",
    "tea.txt": "Green tea is brewed at eighty degrees for two minutes.",
}
GOLDEN = [
    {"question": "How many hours do cats sleep?", "answers": ["sixteen hours"], "document": "cats.txt"},
    {"question": "What is the capital of Italy?", "answers": ["Rome"], "document": "rome.txt"},
    {"question": "At how many degrees is green tea brewed?", "answers": ["eighty degrees"], "document": "tea.txt"},
]


def _jsonl(items: list[dict[str, object]]) -> str:
    return "\n".join(json.dumps(i) for i in items)


def _code(response: object) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]  # type: ignore[attr-defined]


@pytest.fixture
def kb(client: TestClient) -> TestClient:
    client.post("/v1/collections", json={"name": "kb"})
    upload(client, "kb", DOCS)
    assert client.put("/v1/collections/kb/golden", content=_jsonl(GOLDEN)).json() == {"questions": 3}
    return client


def test_golden_questions(kb: TestClient) -> None:
    assert [g["question"] for g in kb.get("/v1/collections/kb/golden").json()] == [g["question"] for g in GOLDEN]
    for bad in ("", "not json", '{"question": "q", "answers": [], "document": "d"}', "[1]"):
        assert _code(kb.put("/v1/collections/kb/golden", content=bad)) == (422, "invalid_request"), bad
    assert _code(kb.put("/v1/collections/kb/golden", content=b"\xff\xfe")) == (422, "invalid_request")
    assert _code(kb.get("/v1/collections/nope/golden")) == (404, "not_found")


def test_a_full_run_builds_scores_and_serves_a_new_version(kb: TestClient) -> None:
    before = kb.post("/v1/collections/kb/search", json={"query": "capital of Italy"}).json()["results"]
    queued = kb.post("/v1/collections/kb/reindex", json={"kind": "full"})
    assert queued.status_code == 202 and queued.json()["status"] == "queued"
    run = kb.get(f"/v1/collections/kb/runs/{queued.json()['id']}").json()
    assert run["status"] == "succeeded", run
    assert (run["from_version"], run["to_version"]) == (1, 2)
    assert run["scores"] == {"current": 1.0, "candidate": 1.0}
    assert run["counts"]["updated"] == 3
    versions = {v["version"]: v["status"] for v in kb.get("/v1/collections/kb/versions").json()}
    assert versions == {1: "previous", 2: "active"}
    after = kb.post("/v1/collections/kb/search", json={"query": "capital of Italy"}).json()["results"]
    assert [h["text"] for h in after] == [h["text"] for h in before]
    assert [r["id"] for r in kb.get("/v1/collections/kb/runs").json()] == [run["id"]]

    rolled = kb.post("/v1/collections/kb/rollback")
    assert rolled.status_code == 200 and rolled.json()["status"] == "succeeded"
    assert (rolled.json()["from_version"], rolled.json()["to_version"]) == (2, 1)
    versions = {v["version"]: v["status"] for v in kb.get("/v1/collections/kb/versions").json()}
    assert versions == {1: "active", 2: "previous"}


class FirstLetterEmbedder(HashEmbedder):
    """A poor model: a text's vector is its first letter."""

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dimension
        vector[ord(text.strip()[:1].lower() or "a") % self.dimension] = 1.0
        return vector


def test_a_worse_version_is_rejected_and_the_served_one_stays(
    app_client: Callable[..., TestClient], fast_settings: Settings
) -> None:
    client = app_client(settings=fast_settings.model_copy(update={"search_mode": "dense"}))
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    client.post("/v1/collections", json={"name": "kb"})
    # Texts that start as the questions do, so the poor model ranks them first.
    fillers = {f"{start.split()[0].lower()}{i}.txt": f"{start} filler number {i}."
               for start in ("How about", "What about", "At noon") for i in range(5)}
    upload(client, "kb", {**DOCS, **fillers})
    client.put("/v1/collections/kb/golden", content=_jsonl(GOLDEN))
    # The configured embedding model changes to the poor one; a full run would build with it.
    worse = FirstLetterEmbedder(dimension=32, model_id="first-letter")
    runtime.embedders.default = worse  # type: ignore[assignment]
    runtime.embedders._loaded[worse.model_id] = worse  # type: ignore[assignment]
    run_id = client.post("/v1/collections/kb/reindex", json={"kind": "full"}).json()["id"]
    run = client.get(f"/v1/collections/kb/runs/{run_id}").json()
    assert run["status"] == "rejected", run["error"]
    assert run["scores"] == {"current": 1.0, "candidate": 0.0}
    assert "below the current version" in run["error"]
    versions = {v["version"]: v["status"] for v in client.get("/v1/collections/kb/versions").json()}
    assert versions == {1: "active", 2: "rejected"}
    hits = client.post("/v1/collections/kb/search", json={"query": "capital of Italy"}).json()["results"]
    assert hits[0]["filename"] == "rome.txt"  # still version 1, with its own model


def test_run_errors(kb: TestClient, runtime: Runtime) -> None:
    assert _code(kb.post("/v1/collections/kb/rollback")) == (409, "conflict")  # nothing to roll back to
    assert _code(kb.post("/v1/collections/kb/reindex", json={"kind": "sync"})) == (422, "invalid_request")
    assert _code(kb.post("/v1/collections/kb/reindex", json={"kind": "other"})) == (422, "invalid_request")
    assert _code(kb.post("/v1/collections/nope/reindex", json={"kind": "full"})) == (404, "not_found")
    assert _code(kb.get("/v1/collections/kb/runs/no-such-run")) == (404, "not_found")
    # A run still queued (its worker busy elsewhere) blocks a second one.
    with runtime.registry.unit_of_work() as uow:
        uow.runs.create(uow.collections.get("kb").id, kind="full", trigger="manual")
    assert _code(kb.post("/v1/collections/kb/reindex", json={"kind": "full"})) == (409, "conflict")


def test_sync_mirrors_a_bound_folder(
    app_client: Callable[..., TestClient], fast_settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "roots"
    folder = root / "kb"
    folder.mkdir(parents=True)
    (folder / "cats.txt").write_text(DOCS["cats.txt"])
    (folder / "rome.txt").write_text(DOCS["rome.txt"])
    client = app_client(settings=fast_settings.model_copy(update={"sync_roots": [root]}))
    client.post("/v1/collections", json={"name": "kb"})
    assert client.get("/v1/collections/kb/source").json() == {"folder": None}
    assert _code(client.put("/v1/collections/kb/source", json={"folder": str(tmp_path)})) == (422, "invalid_request")
    assert client.put("/v1/collections/kb/source", json={"folder": str(folder)}).json() == {"folder": str(folder)}

    def sync() -> dict[str, object]:
        run_id = client.post("/v1/collections/kb/reindex", json={"kind": "sync"}).json()["id"]
        run: dict[str, object] = client.get(f"/v1/collections/kb/runs/{run_id}").json()
        assert run["status"] == "succeeded", run
        return run["counts"]  # type: ignore[return-value]

    assert sync() == {"added": 2, "updated": 0, "deleted": 0, "unchanged": 0, "failed": 0}
    (folder / "rome.txt").write_text(DOCS["rome.txt"] + " It has many fountains.")
    (folder / "cats.txt").unlink()
    (folder / "tea.txt").write_text(DOCS["tea.txt"])
    assert sync() == {"added": 1, "updated": 1, "deleted": 1, "unchanged": 0, "failed": 0}
    docs = {d["filename"]: d["status"] for d in client.get("/v1/collections/kb/documents").json()}
    assert docs == {"rome.txt": "indexed", "tea.txt": "indexed"}
    assert client.delete("/v1/collections/kb/source").status_code == 204
    assert client.get("/v1/collections/kb/source").json() == {"folder": None}


def test_schedules(kb: TestClient, runtime: Runtime) -> None:
    created = kb.post(
        "/v1/collections/kb/schedules", json={"cron": "0 3 * * *", "timezone": "Europe/Paris", "kind": "full"}
    )
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["enabled"] is True and schedule["next_run_at"].endswith(("T02:00:00Z", "T01:00:00Z"))
    sid = schedule["id"]
    assert [s["id"] for s in kb.get("/v1/collections/kb/schedules").json()] == [sid]
    assert kb.get(f"/v1/collections/kb/schedules/{sid}").json()["cron"] == "0 3 * * *"
    paused = kb.patch(f"/v1/collections/kb/schedules/{sid}", json={"enabled": False}).json()
    assert paused["enabled"] is False and paused["next_run_at"] is None
    for bad in ({"cron": "61 * * * *"}, {"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, {"cron": "* * *"}):
        assert _code(kb.post("/v1/collections/kb/schedules", json=bad)) == (422, "invalid_request"), bad
    assert _code(kb.post("/v1/collections/kb/schedules", json={"cron": "0 3 * * *", "kind": "sync"}))[0] == 422
    assert _code(kb.get("/v1/collections/kb/schedules/nope")) == (404, "not_found")
    assert kb.delete(f"/v1/collections/kb/schedules/{sid}").status_code == 204
    assert _code(kb.delete(f"/v1/collections/kb/schedules/{sid}")) == (404, "not_found")
