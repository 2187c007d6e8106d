"""Cron slots, slot claims by concurrent schedulers, the re-index lock and the
folder roots. The registry is real (SQLite files; PostgreSQL when running)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rag.errors import InvalidRequestError
from rag.folders import resolve_bound_folder, scan_folder
from rag.registry import Database, RunRecord, RunStatus, RunUpdate
from rag.reindex import ReindexService
from rag.schedules import due_slot, next_slot, validate_schedule
from rag.store import VectorStore
from tests.support.databases import registry_url_for


def test_cron_slots_follow_the_time_zone() -> None:
    # 03:00 in Paris is 02:00 UTC in winter and 01:00 UTC in summer.
    assert next_slot("0 3 * * *", "Europe/Paris", datetime(2026, 1, 10, 12, tzinfo=UTC)) == datetime(
        2026, 1, 11, 2, tzinfo=UTC
    )
    assert next_slot("0 3 * * *", "Europe/Paris", datetime(2026, 7, 10, 12, tzinfo=UTC)) == datetime(
        2026, 7, 11, 1, tzinfo=UTC
    )
    now = datetime(2026, 7, 11, 1, 0, 30, tzinfo=UTC)
    long_ago = now - timedelta(days=30)
    assert due_slot("0 3 * * *", "Europe/Paris", now, not_before=long_ago, grace_s=60) == datetime(
        2026, 7, 11, 1, tzinfo=UTC
    )
    # Missed by more than the grace (beat was down): not caught up.
    assert due_slot("0 3 * * *", "Europe/Paris", now + timedelta(minutes=5), not_before=long_ago, grace_s=60) is None
    # A slot before the schedule was created or edited does not count.
    assert due_slot("0 3 * * *", "Europe/Paris", now, not_before=now - timedelta(seconds=5), grace_s=60) is None
    # Exactly on the slot counts; six fields have seconds last.
    exact = datetime(2026, 7, 11, 1, 0, 4, tzinfo=UTC)
    assert due_slot("* * * * * */2", "UTC", exact, not_before=long_ago, grace_s=60) == exact


def test_schedule_validation() -> None:
    validate_schedule("*/5 * * * *", "America/New_York", "sync")
    for cron, tz, kind in (("* * *", "UTC", "sync"), ("0 3 * * *", "Nowhere/Land", "full"), ("0 3 * * *", "UTC", "x")):
        with pytest.raises(InvalidRequestError):
            validate_schedule(cron, tz, kind)


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with registry_url_for(request.param, tmp_path) as url:
        yield url


def _service(registry: Database, enqueued: list[str]) -> ReindexService:
    return ReindexService(
        registry=registry,
        store=VectorStore(),  # in memory: tick only looks for expired versions
        enqueue_run=enqueued.append,
        sync_roots=[],
        keep_previous_s=60,
        lock_stale_s=3600,
        misfire_grace_s=30,
    )


def test_two_schedulers_never_run_the_same_slot_twice(registry_url: str) -> None:
    # Two registries on one database: two beat processes, as far as the DB can tell.
    first, second = Database(registry_url), Database(registry_url)
    try:
        with first.unit_of_work() as uow:
            collection = uow.collections.create("c")
            schedule = uow.schedules.create(
                collection.id, cron="* * * * * */2", timezone="UTC", kind="full", enabled=True
            )
        enqueued_a: list[str] = []
        enqueued_b: list[str] = []
        beats = [_service(first, enqueued_a), _service(second, enqueued_b)]
        start = next_slot(schedule.cron, "UTC", schedule.updated_at + timedelta(seconds=10))
        # Both beats tick at the same instants, at once; every instant is seen
        # twice by each of them (ticks come more often than slots).
        instants = [start + timedelta(seconds=s / 2) for s in range(40)]
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def beat(service: ReindexService, name: str) -> None:
            try:
                for now in instants:
                    barrier.wait(10)
                    service.tick(now, claimer=name)
                    service.tick(now, claimer=name)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=beat, args=(s, f"beat-{i}")) for i, s in enumerate(beats)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        with first.unit_of_work() as uow:
            runs = uow.runs.list_for(collection.id, limit=1000)
        slots = [r.slot_at for r in runs]
        expected = {start + timedelta(seconds=2 * i) for i in range(10)}
        assert len(slots) == len(set(slots)) == len(expected)
        assert set(slots) == expected
        # Each run was enqueued once, by whichever beat claimed its slot; runs of a
        # collection whose previous run is still queued are recorded as skipped.
        enqueued = enqueued_a + enqueued_b
        assert len(enqueued) == len(set(enqueued))
        assert {r.id for r in runs if r.status is RunStatus.QUEUED} == set(enqueued)
        assert all(r.status in (RunStatus.QUEUED, RunStatus.SKIPPED) for r in runs)
    finally:
        first.close()
        second.close()


def test_one_reindex_per_collection_at_a_time(registry_url: str) -> None:
    registry = Database(registry_url)
    try:
        with registry.unit_of_work() as uow:
            c = uow.collections.create("c")
            other = uow.collections.create("d")
        assert _acquire(registry, c.id, "run-1")
        assert not _acquire(registry, c.id, "run-2")
        assert _acquire(registry, other.id, "run-3")  # other collections go on
        _release(registry, c.id, "run-2")  # not the holder: no effect
        assert _holder(registry, c.id) == "run-1"
        _release(registry, c.id, "run-1")
        assert _acquire(registry, c.id, "run-2")
        # A lock left by a dead worker is taken over once stale.
        assert _acquire(registry, c.id, "run-4", stale_after_s=0)
        assert _holder(registry, c.id) == "run-4"
    finally:
        registry.close()


def _acquire(registry: Database, collection_id: str, run_id: str, *, stale_after_s: float = 3600) -> bool:
    with registry.unit_of_work() as uow:
        return uow.runs.acquire_lock(collection_id, run_id, stale_after_s=stale_after_s)


def _release(registry: Database, collection_id: str, run_id: str) -> None:
    with registry.unit_of_work() as uow:
        uow.runs.release_lock(collection_id, run_id)


def _holder(registry: Database, collection_id: str) -> str | None:
    with registry.unit_of_work() as uow:
        return uow.runs.lock_holder(collection_id)


def _new_run(registry: Database, collection_id: str, kind: str = "full") -> RunRecord:
    with registry.unit_of_work() as uow:
        return uow.runs.create(collection_id, kind=kind, trigger="manual")


def test_a_queued_run_that_finds_the_lock_taken_is_skipped(tmp_path: Path) -> None:
    from ingest.runner import ReindexRunner

    registry = Database(f"sqlite:///{tmp_path / 'r.db'}")
    service = _service(registry, [])
    runner = ReindexRunner(
        registry=registry,
        store=service.store,
        blobs=None,  # type: ignore[arg-type]
        indexer=None,  # type: ignore[arg-type]
        embedders=None,  # type: ignore[arg-type]
        reindex=service,
        is_supported=lambda name: True,
        max_upload_bytes=1000,
        quality_margin=0.0,
        retriever=None,  # type: ignore[arg-type]
    )
    with registry.unit_of_work() as uow:
        c = uow.collections.create("c")
    holder = _new_run(registry, c.id)
    assert _acquire(registry, c.id, holder.id)
    waiting = _new_run(registry, c.id, "sync")
    done = runner.run(waiting.id)
    assert done is not None and done.status is RunStatus.SKIPPED and holder.id in (done.error or "")
    assert _holder(registry, c.id) == holder.id


def test_bound_folders_stay_under_the_allowed_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "docs" / "deep").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link-out").symlink_to(outside)
    (root / "link-in").symlink_to(root / "docs")
    assert resolve_bound_folder(str(root / "docs"), [root]) == (root / "docs").resolve()
    assert resolve_bound_folder(str(root / "link-in"), [root]) == (root / "docs").resolve()
    assert resolve_bound_folder(str(root / "docs" / ".." / "docs" / "deep"), [root]) == (root / "docs" / "deep")
    for bad in (
        str(outside),
        str(root / ".." / "outside"),
        str(root / "link-out"),
        str(root / "missing"),
        "docs",
    ):
        with pytest.raises(InvalidRequestError):
            resolve_bound_folder(bad, [root])
    with pytest.raises(InvalidRequestError, match="RAG_SYNC_ROOTS"):
        resolve_bound_folder(str(root / "docs"), [])

    # A sync never follows a link out of the folder, and skips hidden files.
    (root / "docs" / "a.txt").write_text("a")
    (root / "docs" / ".hidden.txt").write_text("h")
    (outside / "secret.txt").write_text("s")
    (root / "docs" / "secret.txt").symlink_to(outside / "secret.txt")
    (root / "docs" / "deep" / "b.md").write_text("b")
    found = [f.relpath for f in scan_folder(root / "docs")]
    assert found == ["a.txt", "deep/b.md"]


def test_runs_lost_by_a_dead_worker_do_not_block_the_collection(tmp_path: Path) -> None:
    registry = Database(f"sqlite:///{tmp_path / 'r.db'}")
    enqueued: list[str] = []
    service = _service(registry, enqueued)
    with registry.unit_of_work() as uow:
        c = uow.collections.create("c")
    running = _new_run(registry, c.id)
    assert _acquire(registry, c.id, running.id)
    with registry.unit_of_work() as uow:
        uow.runs.update(running.id, RunUpdate(status=RunStatus.RUNNING))
    assert [r.id for r in service.open_runs(c.id)] == [running.id]  # alive: it holds the lock
    # Its worker died and a later run took the stale lock over, then finished.
    assert _acquire(registry, c.id, "other", stale_after_s=0)
    _release(registry, c.id, "other")
    assert service.open_runs(c.id) == []
    with registry.unit_of_work() as uow:
        lost = uow.runs.get(running.id)
        uow.collections.create("d")
    assert lost is not None and lost.status is RunStatus.FAILED and "lost" in (lost.error or "")
    queued = _new_run(registry, c.id)
    assert [r.id for r in service.open_runs(c.id)] == [queued.id]


def test_processes_starting_at_once_on_an_empty_postgresql(registry_url: str) -> None:
    # API, worker and beats create the registry's tables at start-up; on
    # PostgreSQL an advisory lock keeps them from racing.
    if not registry_url.startswith("postgresql"):
        pytest.skip("SQLite is opened by the embedded mode's one process")
    errors: list[BaseException] = []

    def open_registry() -> None:
        try:
            Database(registry_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_registry) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
