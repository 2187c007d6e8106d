"""Re-indexing in split mode: `rag api`, `rag worker` and two `rag beat`
processes, Redis broker, PostgreSQL registry, Qdrant over REST. Two beats share
the schedules and never start one slot twice; a full re-index switches the alias
on the Qdrant server while searches go on."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.docmaker import make_all
from tests.integration.test_reindex_embedded import Hammer, reindex, top_texts
from tests.support.qdrant_server import run_qdrant_server
from tests.support.service import running, split_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.split]


def test_two_beats_one_run_per_slot_and_a_full_reindex(
    tmp_path: Path,
    postgres_url: str,
    redis_url: str,
) -> None:
    docs = make_all(tmp_path / "docs")
    allowed = tmp_path / "allowed"
    folder = allowed / "docs"
    folder.mkdir(parents=True)
    for fmt in ("txt", "md", "html"):
        (folder / docs[fmt][0].name).write_bytes(docs[fmt][0].read_bytes())
    questions = [docs[fmt][1] for fmt in ("txt", "md", "html")]
    with run_qdrant_server(tmp_path) as qdrant_url:
        env = split_env(
            tmp_path / "data",
            broker=redis_url,
            database=postgres_url,
            qdrant=qdrant_url,
            RAG_LLM_LOAD="false",
            RAG_SYNC_ROOTS=json.dumps([str(allowed)]),
            RAG_SCHEDULER_INTERVAL_S="0.5",
        )
        with ExitStack() as processes:
            worker = processes.enter_context(running("worker", env, tmp_path / "worker.log"))
            beats = [processes.enter_context(running("beat", env, tmp_path / f"beat{i}.log")) for i in range(2)]
            api = processes.enter_context(running("api", env, tmp_path / "api.log"))
            with api.client() as c:
                assert c.post("/v1/collections", json={"name": "shared"}).status_code == 201
                assert c.put("/v1/collections/shared/source", json={"folder": str(folder)}).status_code == 200
                r = c.post("/v1/collections/shared/schedules", json={"cron": "* * * * * */2", "kind": "sync"})
                assert r.status_code == 201, r.text
                schedule = r.json()

                def scheduled() -> list[dict[str, Any]]:
                    return [r for r in c.get("/v1/collections/shared/runs").json() if r["trigger"] == "schedule"]

                wait_for(lambda: len(scheduled()) >= 5, timeout=120, what="five scheduled runs")
                c.patch(f"/v1/collections/shared/schedules/{schedule['id']}", json={"enabled": False})
                wait_for(
                    lambda: all(r["status"] not in ("queued", "running") for r in scheduled()),
                    timeout=120,
                    what="scheduled runs to end",
                )
                runs = scheduled()
                slots = [r["slot_at"] for r in runs]
                assert len(slots) == len(set(slots)), slots  # two beats, each slot once
                assert {r["status"] for r in runs} <= {"succeeded", "skipped"}
                succeeded = sorted((r for r in runs if r["status"] == "succeeded"), key=lambda r: r["slot_at"])
                assert succeeded[0]["counts"]["added"] == 3
                assert all(r["counts"]["unchanged"] == 3 for r in succeeded[1:])

                # A full re-index over the Qdrant server while searches go on.
                before = top_texts(c, "shared", questions)
                hammer = Hammer(api.url, "shared", questions)
                hammer.start()
                try:
                    run = reindex(c, "shared")
                finally:
                    hammer.stop()
                assert run["status"] == "succeeded", run
                assert not hammer.errors and hammer.results
                assert {(status, hits > 0) for status, hits, _ in hammer.results} == {(200, True)}
                versions = {v["version"]: v["status"] for v in c.get("/v1/collections/shared/versions").json()}
                assert versions == {1: "previous", 2: "active"}
                assert top_texts(c, "shared", questions) == before  # same settings, same answers
                assert c.post("/v1/collections/shared/rollback").status_code == 200
                versions = {v["version"]: v["status"] for v in c.get("/v1/collections/shared/versions").json()}
                assert versions == {1: "active", 2: "previous"}
                info = c.get("/v1/collections/shared").json()
                assert info["points"] == info["chunks"] > 0
            assert all(b.proc.poll() is None for b in beats), "a beat exited"
        assert "rag.reindex" in worker.log()
