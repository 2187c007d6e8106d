"""Re-indexing over HTTP against `rag serve` (embedded mode: in-process worker
and Celery beat, Qdrant local store): zero-downtime full re-index behind the
alias, rollback, a change of vector size, the quality gate, folder sync and
cron schedules."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.docmaker import make_all, make_document
from tests.support.service import (
    AUTH_HEADERS,
    ServiceProcess,
    free_port,
    rag_cli,
    upload,
    wait_for,
    wait_indexed,
)
from tests.support.tiny_model import DIMENSION, build_tiny_model

pytestmark = pytest.mark.slow


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {"RAG_DATA_DIR": str(data_dir), "RAG_LLM_N_CTX": "2048", "RAG_MAX_TOKENS": "32", **extra}


def _start(data: Path, log: Path, **extra: str) -> ServiceProcess:
    proc = ServiceProcess("serve", _env(data, **extra), log, port=free_port())
    try:
        proc.wait_ready()
    except BaseException:
        proc.stop()
        raise
    return proc


def wait_run(client: httpx.Client, collection: str, run_id: str, timeout: float = 300) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        run: dict[str, Any] = client.get(f"/v1/collections/{collection}/runs/{run_id}").json()
        return run if run["status"] not in ("queued", "running") else None

    return wait_for(done, timeout=timeout, interval=0.5, what=f"run {run_id}")  # type: ignore[no-any-return]


def reindex(client: httpx.Client, collection: str, kind: str = "full") -> dict[str, Any]:
    r = client.post(f"/v1/collections/{collection}/reindex", json={"kind": kind})
    assert r.status_code == 202, r.text
    return wait_run(client, collection, r.json()["id"])


def top_texts(client: httpx.Client, collection: str, questions: list[str], k: int = 3) -> list[list[str]]:
    out = []
    for q in questions:
        r = client.post(f"/v1/collections/{collection}/search", json={"query": q, "top_k": k, "mode": "hybrid"})
        assert r.status_code == 200, r.text
        out.append([h["text"] for h in r.json()["results"]])
    return out


def active_version(client: httpx.Client, collection: str) -> dict[str, Any]:
    versions = client.get(f"/v1/collections/{collection}/versions").json()
    (active,) = [v for v in versions if v["status"] == "active"]
    return active  # type: ignore[no-any-return]


def _load_collection(client: httpx.Client, name: str, paths: list[Path]) -> list[dict[str, Any]]:
    assert client.post("/v1/collections", json={"name": name}).status_code == 201
    items = upload(client, name, paths).json()["documents"]
    done = wait_indexed(client, name, [i["id"] for i in items])
    assert {d["status"] for d in done} == {"indexed"}, done
    return done


class Hammer(threading.Thread):
    """Searches over HTTP without pause until stopped, recording every answer."""

    def __init__(self, url: str, collection: str, questions: list[str]) -> None:
        super().__init__(daemon=True)
        self.url, self.collection, self.questions = url, collection, questions
        self.results: list[tuple[int, int, list[str]]] = []  # (status, hits, texts)
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60, headers=AUTH_HEADERS) as client:
            i = 0
            while not self._stop_event.is_set():
                q = self.questions[i % len(self.questions)]
                i += 1
                try:
                    r = client.post(f"/v1/collections/{self.collection}/search", json={"query": q, "top_k": 3})
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                hits = r.json().get("results", []) if r.status_code == 200 else []
                self.results.append((r.status_code, len(hits), [h["text"] for h in hits]))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(60)


def test_full_reindex_has_no_empty_window_and_rollback_restores_answers(tmp_path: Path) -> None:
    docs = make_all(tmp_path / "docs")
    questions = [q for _, q, _ in docs.values()]
    data = tmp_path / "data"

    first = _start(data, tmp_path / "1.log")
    try:
        with first.client() as c:
            _load_collection(c, "live", [p for p, _, _ in docs.values()])
            before = top_texts(c, "live", questions)
            ask = {"question": docs["docx"][1], "max_tokens": 16}
            answer_before = c.post("/v1/collections/live/ask", json=ask).json()
            assert answer_before["grounded"]
    finally:
        first.stop()

    # New chunking settings: the served version keeps answering as before until a
    # full re-index has built the new one.
    second = _start(data, tmp_path / "2.log", RAG_CHUNK_MAX_TOKENS="24", RAG_CHUNK_OVERLAP_TOKENS="4")
    try:
        with second.client() as c:
            assert top_texts(c, "live", questions) == before
            hammer = Hammer(second.url, "live", questions)
            hammer.start()
            try:
                # Searches before, during and after the run: the hammer is going, then
                # keeps going once the new version is served.
                wait_for(lambda: len(hammer.results) >= 3, timeout=60, what="searches before the run")
                run = reindex(c, "live")
                after = len(hammer.results)
                wait_for(lambda: len(hammer.results) >= after + 3, timeout=60, what="searches after the run")
            finally:
                hammer.stop()
            assert run["status"] == "succeeded", run
            assert run["counts"] == {"added": 0, "updated": len(docs), "deleted": 0, "unchanged": 0, "failed": 0}
            assert (run["from_version"], run["to_version"]) == (1, 2)
            assert run["duration_s"] > 0

            # Every search during the re-index answered, with results.
            assert not hammer.errors, hammer.errors[:3]
            assert len(hammer.results) >= 10
            assert {status for status, _, _ in hammer.results} == {200}
            assert min(hits for _, hits, _ in hammer.results) > 0
            # ... and the switch happened while they ran: old and new chunks were both seen.
            old_texts = {t for texts in before for t in texts}
            seen_old = any(set(texts) <= old_texts for _, _, texts in hammer.results[:3])
            seen_new = any(not set(texts) <= old_texts for _, _, texts in hammer.results[-3:])
            assert seen_old and seen_new

            after = top_texts(c, "live", questions)
            assert after != before
            info = c.get("/v1/collections/live").json()
            assert info["points"] == info["chunks"]
            versions = {v["version"]: v for v in c.get("/v1/collections/live/versions").json()}
            assert versions[2]["status"] == "active" and versions[1]["status"] == "previous"
            assert versions[1]["expires_at"]

            r = c.post("/v1/collections/live/rollback")
            assert r.status_code == 200, r.text
            assert (r.json()["from_version"], r.json()["to_version"]) == (2, 1)
            assert top_texts(c, "live", questions) == before
            answer_after = c.post("/v1/collections/live/ask", json=ask).json()
            assert answer_after["answer"] == answer_before["answer"]
            assert [s["text"] for s in answer_after["sources"]] == [s["text"] for s in answer_before["sources"]]
            info = c.get("/v1/collections/live").json()
            assert info["points"] == info["chunks"]
            assert active_version(c, "live")["version"] == 1

            runs = c.get("/v1/collections/live/runs").json()
            assert [r["kind"] for r in runs] == ["rollback", "full"]
    finally:
        second.stop()


def test_vector_size_change_and_the_quality_gate(tmp_path: Path) -> None:
    docs = make_all(tmp_path / "docs")
    tiny = build_tiny_model(tmp_path / "tiny")
    data = tmp_path / "data"
    golden = "\n".join(
        json.dumps({"question": q, "answers": [a], "document": p.name}) for p, q, a in docs.values()
    )

    first = _start(data, tmp_path / "1.log", RAG_LLM_LOAD="false")
    try:
        with first.client() as c:
            _load_collection(c, "gated", [p for p, _, _ in docs.values()])
            r = c.put("/v1/collections/gated/golden", content=golden, headers={"content-type": "application/jsonl"})
            assert r.status_code == 200 and r.json() == {"questions": len(docs)}, r.text
            bad = c.put("/v1/collections/gated/golden", content='{"question": "x"}\n')
            assert bad.status_code == 422 and "line 1" in bad.json()["error"]["message"]
            _load_collection(c, "resized", [docs["txt"][0], docs["md"][0]])
            gated_before = top_texts(c, "gated", [q for _, q, _ in docs.values()])
    finally:
        first.stop()

    # Another embedding model, with another vector size (32 instead of 384).
    second = _start(
        data,
        tmp_path / "2.log",
        RAG_LLM_LOAD="false",
        RAG_EMBEDDING_MODEL=str(tiny),
        RAG_QUALITY_GATE_MARGIN="0.1",
        # Dense search alone: lexical matching would make up for the random model.
        RAG_SEARCH_MODE="dense",
    )
    try:
        with second.client() as c:
            # The served versions are still queried with the model that built them.
            assert top_texts(c, "gated", [q for _, q, _ in docs.values()]) == gated_before

            # Quality gate: the random tiny model retrieves badly, so the run is rejected.
            run = reindex(c, "gated")
            assert run["status"] == "rejected", run
            assert run["scores"]["current"] == 1.0
            assert run["scores"]["candidate"] < 0.9
            assert "answer-recall@5" in run["error"]
            assert active_version(c, "gated")["version"] == 1
            statuses = {v["version"]: v["status"] for v in c.get("/v1/collections/gated/versions").json()}
            assert statuses == {1: "active", 2: "rejected"}
            assert top_texts(c, "gated", [q for _, q, _ in docs.values()]) == gated_before

            # Vector size change: no golden questions here, so the new version is promoted.
            run = reindex(c, "resized")
            assert run["status"] == "succeeded", run
            active = active_version(c, "resized")
            assert active["version"] == 2 and active["dimension"] == DIMENSION
            assert active["embedding_model"] == str(tiny)
            hits = c.post("/v1/collections/resized/search", json={"query": docs["txt"][1]}).json()["results"]
            assert hits
            # New uploads go into the new version with the new model.
            (doc,) = upload(c, "resized", [docs["html"][0]]).json()["documents"]
            wait_indexed(c, "resized", [doc["id"]])
            info = c.get("/v1/collections/resized").json()
            assert info["documents"] == 3 and info["points"] == info["chunks"] > 0
            # ... and back to the 384-dimension version.
            assert c.post("/v1/collections/resized/rollback").status_code == 200
            assert active_version(c, "resized")["dimension"] == 384
            hits = c.post("/v1/collections/resized/search", json={"query": docs["txt"][1]}).json()["results"]
            assert hits[0]["filename"] == docs["txt"][0].name
    finally:
        second.stop()


@pytest.fixture(scope="module")
def sync_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, Path]]:
    root = tmp_path_factory.mktemp("sync")
    allowed = root / "allowed"
    allowed.mkdir()
    proc = _start(
        root / "data",
        root / "serve.log",
        RAG_LLM_LOAD="false",
        RAG_SYNC_ROOTS=json.dumps([str(allowed)]),
        RAG_SCHEDULER_INTERVAL_S="1",
    )
    try:
        yield proc, allowed
    finally:
        proc.stop()


def _fact(directory: Path, name: str, fact: str) -> Path:
    fmt = name.rsplit(".", 1)[1]
    return make_document(fmt, directory, name=name, title=f"Notes {name}", paragraphs=[fact])


def test_folder_sync_mirrors_the_folder(sync_service: tuple[ServiceProcess, Path], tmp_path: Path) -> None:
    service, allowed = sync_service
    folder = allowed / "handbook"
    (folder / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (allowed / "escape").symlink_to(outside)
    with service.client() as c:
        c.post("/v1/collections", json={"name": "mirror"})
        # Anything outside the allowed roots is refused, however it is spelled.
        for bad in (str(outside), str(allowed / ".." / "outside"), str(allowed / "escape"), "relative/path"):
            r = c.put("/v1/collections/mirror/source", json={"folder": bad})
            assert r.status_code == 422, (bad, r.text)
        r = c.post("/v1/collections/mirror/reindex", json={"kind": "sync"})
        assert r.status_code == 422 and "not bound" in r.json()["error"]["message"]
        r = c.post("/v1/collections/mirror/schedules", json={"cron": "0 3 * * *", "kind": "sync"})
        assert r.status_code == 422 and "not bound" in r.json()["error"]["message"]
        r = c.put("/v1/collections/mirror/source", json={"folder": str(folder)})
        assert r.status_code == 200 and r.json()["folder"] == str(folder.resolve())

        _fact(folder, "keep.txt", "The keeper of the lighthouse is called Amber Quill.")
        _fact(folder, "change.md", "The greenhouse door code is OLIVE-1111.")
        _fact(folder / "sub", "remove.html", "The museum opens at nine o'clock sharp.")
        run = reindex(c, "mirror", "sync")
        assert run["status"] == "succeeded", run
        assert run["counts"] == {"added": 3, "updated": 0, "deleted": 0, "unchanged": 0, "failed": 0}
        docs = {d["filename"]: d for d in c.get("/v1/collections/mirror/documents").json()}
        assert set(docs) == {"keep.txt", "change.md", "sub/remove.html"}

        # Folder changes: one unchanged, one changed, one removed, two new, one broken.
        _fact(folder, "change.md", "The greenhouse door code is PLUM-2222.")
        (folder / "sub" / "remove.html").unlink()
        _fact(folder / "sub", "new.docx", "The submarine dock is number seventeen.")
        _fact(folder, "new.csv", "The bakery oven serial is CRUMB-3333.")
        (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not a pdf at all \x00\x01")
        (folder / "ignored.exe").write_bytes(b"MZ")
        run = reindex(c, "mirror", "sync")
        assert run["status"] == "succeeded", run
        assert run["counts"] == {"added": 2, "updated": 1, "deleted": 1, "unchanged": 1, "failed": 1}

        after = {d["filename"]: d for d in c.get("/v1/collections/mirror/documents").json()}
        assert set(after) == {"keep.txt", "change.md", "sub/new.docx", "new.csv", "broken.pdf"}
        assert after["change.md"]["id"] == docs["change.md"]["id"]  # same document id
        assert after["keep.txt"]["updated_at"] == docs["keep.txt"]["updated_at"]  # untouched
        assert after["broken.pdf"]["status"] == "failed"
        info = c.get("/v1/collections/mirror").json()
        assert info["points"] == info["chunks"] == sum(d["chunk_count"] for d in after.values())
        hits = c.post("/v1/collections/mirror/search", json={"query": "greenhouse door code"}).json()["results"]
        texts = " ".join(h["text"] for h in hits)
        assert "PLUM-2222" in texts and "OLIVE-1111" not in texts
        hits = c.post("/v1/collections/mirror/search", json={"query": "When does the museum open?"}).json()
        assert all(h["filename"] != "sub/remove.html" for h in hits["results"])

    # A third run, started from the CLI, with no change: it touches nothing (the
    # broken file is unchanged too).
    out = _cli("reindex", "--collection", "mirror", "--kind", "sync", "--url", service.url)
    assert out.strip().splitlines()[1].split()[2:10] == ["sync", "manual", "succeeded", "0", "0", "0", "5", "0"]

    # The runs, through the CLI, newest first.
    lines = _cli("runs", "--collection", "mirror", "--url", service.url).strip().splitlines()
    assert "added" in lines[0] and len(lines) == 4
    assert lines[2].split()[2:10] == ["sync", "manual", "succeeded", "2", "1", "1", "1", "1"]


def _cli(*args: str) -> str:
    done = rag_cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_schedules_run_through_the_embedded_beat(sync_service: tuple[ServiceProcess, Path]) -> None:
    service, allowed = sync_service
    folder = allowed / "scheduled"
    folder.mkdir()
    _fact(folder, "a.txt", "The scheduled fact is TIMELY-4242.")
    with service.client() as c:
        c.post("/v1/collections", json={"name": "cron"})
        assert c.put("/v1/collections/cron/source", json={"folder": str(folder)}).status_code == 200
        for bad in (
            {"cron": "not a cron", "kind": "sync"},
            {"cron": "0 3 * * *", "kind": "sync", "timezone": "Mars/Olympus"},
            {"cron": "0 3 * * *", "kind": "weekly"},
        ):
            r = c.post("/v1/collections/cron/schedules", json=bad)
            assert r.status_code == 422, (bad, r.text)
        nightly = c.post(
            "/v1/collections/cron/schedules", json={"cron": "0 3 * * *", "timezone": "Europe/Paris", "kind": "full"}
        ).json()
        assert nightly["next_run_at"].endswith(("T02:00:00Z", "T01:00:00Z"))  # 03:00 Paris, in UTC
        # Six fields: seconds last, every 2 seconds.
        r = c.post("/v1/collections/cron/schedules", json={"cron": "* * * * * */2", "kind": "sync"})
        assert r.status_code == 201, r.text
        fast = r.json()
        assert {s["id"] for s in c.get("/v1/collections/cron/schedules").json()} == {nightly["id"], fast["id"]}

        def scheduled_runs() -> list[dict[str, Any]]:
            return [r for r in c.get("/v1/collections/cron/runs").json() if r["trigger"] == "schedule"]

        wait_for(lambda: len([r for r in scheduled_runs() if r["status"] == "succeeded"]) >= 2, timeout=60)
        r = c.patch(f"/v1/collections/cron/schedules/{fast['id']}", json={"enabled": False})
        assert r.status_code == 200 and r.json()["enabled"] is False and r.json()["next_run_at"] is None
        # A slot claimed just before the pause may still be running: wait for it to end.
        wait_for(
            lambda: all(r["status"] not in ("queued", "running") for r in scheduled_runs()),
            timeout=60,
            what="the scheduled runs to finish",
        )
        runs = scheduled_runs()
        slots = [r["slot_at"] for r in runs]
        assert len(slots) == len(set(slots))  # every slot at most once
        assert {r["schedule_id"] for r in runs} == {fast["id"]}
        assert {r["status"] for r in runs} <= {"succeeded", "skipped"}
        first = sorted(runs, key=lambda r: r["slot_at"])[0]
        assert first["counts"]["added"] == 1
        # Nothing may happen now; give beat (1 s ticks) two 2-second slots to prove it.
        time.sleep(4)
        assert len(scheduled_runs()) == len(runs)  # disabled: no more runs

        assert c.delete(f"/v1/collections/cron/schedules/{fast['id']}").status_code == 204
        assert c.get(f"/v1/collections/cron/schedules/{fast['id']}").status_code == 404
        r = c.patch(f"/v1/collections/cron/schedules/{nightly['id']}", json={"cron": "30 4 * * 1"})
        assert r.status_code == 200 and r.json()["cron"] == "30 4 * * 1"

        # One re-index per collection at a time.
        first_run = c.post("/v1/collections/cron/reindex", json={"kind": "full"})
        second_run = c.post("/v1/collections/cron/reindex", json={"kind": "full"})
        assert first_run.status_code == 202
        assert second_run.status_code == 409 and second_run.json()["error"]["code"] == "conflict"
        assert wait_run(c, "cron", first_run.json()["id"])["status"] == "succeeded"
