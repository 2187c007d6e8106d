"""Re-indexing as the API sees it: folder bindings, cron schedules, runs, golden
questions, version switches and rollback.

The runs themselves execute in the ingestion worker (``ingest/runner.py``),
reached through the ``enqueue_run`` callable handed in at wiring time; this
module knows nothing of Celery. ``tick`` is what Celery beat calls: it claims
each due (schedule, slot) with a unique registry row before enqueueing, so two
beats never start the same slot twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from rag.errors import ConflictError, InvalidRequestError, NotFoundError, RagError
from rag.folders import resolve_bound_folder
from rag.quality import GoldenQuestion, parse_golden_jsonl
from rag.registry import (
    CollectionRecord,
    Database,
    GoldenRecord,
    RunRecord,
    RunStatus,
    RunUpdate,
    ScheduleRecord,
    ScheduleUpdate,
    VersionRecord,
    VersionStatus,
)
from rag.schedules import RUN_KINDS, due_slot, validate_schedule
from rag.store import VectorStore

__all__ = ["ReindexService"]

log = logging.getLogger(__name__)


class ReindexService:
    def __init__(
        self,
        *,
        registry: Database,
        store: VectorStore,
        enqueue_run: Callable[[str], None],
        sync_roots: Sequence[Path],
        keep_previous_s: float,
        lock_stale_s: float,
        misfire_grace_s: float,
    ) -> None:
        self.registry = registry
        self.store = store
        self._enqueue_run = enqueue_run
        self._roots = list(sync_roots)
        self.keep_previous_s = keep_previous_s
        self.lock_stale_s = lock_stale_s
        self._grace_s = misfire_grace_s

    def _collection(self, name: str) -> CollectionRecord:
        with self.registry.unit_of_work() as uow:
            return uow.collections.get(name)

    # --- folder binding ----------------------------------------------------------
    def bind_folder(self, name: str, folder: str) -> str:
        collection = self._collection(name)
        real = resolve_bound_folder(folder, self._roots)
        with self.registry.unit_of_work() as uow:
            uow.folders.set_binding(collection.id, str(real))
        return str(real)

    def unbind_folder(self, name: str) -> None:
        collection = self._collection(name)
        with self.registry.unit_of_work() as uow:
            uow.folders.set_binding(collection.id, None)

    def get_folder(self, name: str) -> str | None:
        with self.registry.unit_of_work() as uow:
            return uow.folders.get_binding(uow.collections.get(name).id)

    def checked_folder(self, collection_id: str) -> Path | None:
        """The bound folder, re-checked against the roots at run time (the
        settings or a symlink may have changed since it was bound)."""
        with self.registry.unit_of_work() as uow:
            folder = uow.folders.get_binding(collection_id)
        return resolve_bound_folder(folder, self._roots) if folder is not None else None

    # --- schedules ---------------------------------------------------------------
    def create_schedule(
        self, name: str, *, cron: str, timezone: str, kind: str, enabled: bool = True
    ) -> ScheduleRecord:
        collection = self._collection(name)
        validate_schedule(cron, timezone, kind)
        self._check_kind(collection, kind)
        with self.registry.unit_of_work() as uow:
            return uow.schedules.create(collection.id, cron=cron, timezone=timezone, kind=kind, enabled=enabled)

    def list_schedules(self, name: str) -> list[ScheduleRecord]:
        with self.registry.unit_of_work() as uow:
            return uow.schedules.list_for(uow.collections.get(name).id)

    def get_schedule(self, name: str, schedule_id: str) -> ScheduleRecord:
        with self.registry.unit_of_work() as uow:
            return uow.schedules.get(uow.collections.get(name).id, schedule_id)

    def update_schedule(
        self,
        name: str,
        schedule_id: str,
        *,
        cron: str | None = None,
        timezone: str | None = None,
        kind: str | None = None,
        enabled: bool | None = None,
    ) -> ScheduleRecord:
        with self.registry.unit_of_work() as uow:
            collection = uow.collections.get(name)
            current = uow.schedules.get(collection.id, schedule_id)
        validate_schedule(cron or current.cron, timezone or current.timezone, kind or current.kind)
        self._check_kind(collection, kind or current.kind)
        change = ScheduleUpdate(cron=cron, timezone=timezone, kind=kind, enabled=enabled)
        with self.registry.unit_of_work() as uow:
            return uow.schedules.update(collection.id, schedule_id, change)

    def delete_schedule(self, name: str, schedule_id: str) -> None:
        collection = self._collection(name)
        with self.registry.unit_of_work() as uow:
            uow.schedules.delete(collection.id, schedule_id)

    def tick(self, now: datetime | None = None, *, claimer: str = "beat") -> list[RunRecord]:
        """Start the runs of every due slot not claimed yet; drop expired versions."""
        now = now or datetime.now(UTC)
        started: list[RunRecord] = []
        with self.registry.unit_of_work() as uow:
            schedules = uow.schedules.list_for()
        for schedule in schedules:
            if not schedule.enabled:
                continue
            try:
                slot = due_slot(
                    schedule.cron, schedule.timezone, now, not_before=schedule.updated_at, grace_s=self._grace_s
                )
            except InvalidRequestError:
                log.exception("schedule %s is invalid", schedule.id)
                continue
            if slot is None or not self._claim(schedule.id, slot, claimer):
                continue
            started.append(
                self._start_run(
                    schedule.collection_id, schedule.kind, trigger="schedule", schedule_id=schedule.id, slot_at=slot
                )
            )
        self.drop_expired_versions(now)
        return started

    def _claim(self, schedule_id: str, slot: datetime, claimer: str) -> bool:
        with self.registry.unit_of_work() as uow:
            return uow.schedules.claim_slot(schedule_id, slot, claimer)

    # --- runs ----------------------------------------------------------------------
    def request_run(self, name: str, kind: str) -> RunRecord:
        """``POST .../reindex``: queue a run now; refused while one is open."""
        if kind not in RUN_KINDS:
            raise InvalidRequestError(f"kind must be one of {', '.join(RUN_KINDS)}")
        collection = self._collection(name)
        self._check_kind(collection, kind)
        open_runs = self.open_runs(collection.id)
        if open_runs:
            raise ConflictError(
                f"a re-index of {name!r} is already {open_runs[0].status.value} (run {open_runs[0].id})"
            )
        return self._start_run(collection.id, kind, trigger="manual")

    def _check_kind(self, collection: CollectionRecord, kind: str) -> None:
        with self.registry.unit_of_work() as uow:
            folder = uow.folders.get_binding(collection.id)
        if kind == "sync" and folder is None:
            raise InvalidRequestError(
                f"collection {collection.name!r} is not bound to a folder; a sync needs one (PUT .../source)"
            )

    def _start_run(
        self,
        collection_id: str,
        kind: str,
        *,
        trigger: str,
        schedule_id: str | None = None,
        slot_at: datetime | None = None,
    ) -> RunRecord:
        open_runs = self.open_runs(collection_id)
        with self.registry.unit_of_work() as uow:
            if open_runs and trigger == "schedule":
                return uow.runs.create(
                    collection_id,
                    kind=kind,
                    trigger=trigger,
                    schedule_id=schedule_id,
                    slot_at=slot_at,
                    status=RunStatus.SKIPPED,
                    error=f"another re-index of the collection is {open_runs[0].status.value} (run {open_runs[0].id})",
                )
            run = uow.runs.create(collection_id, kind=kind, trigger=trigger, schedule_id=schedule_id, slot_at=slot_at)
        try:
            self._enqueue_run(run.id)
        except RagError as exc:
            self._update_run(
                run.id, RunUpdate(status=RunStatus.FAILED, error=exc.message, finished_at=datetime.now(UTC))
            )
            raise
        return run

    def _update_run(self, run_id: str, change: RunUpdate) -> RunRecord | None:
        with self.registry.unit_of_work() as uow:
            return uow.runs.update(run_id, change)

    def open_runs(self, collection_id: str) -> list[RunRecord]:
        """Queued or running runs that are still alive. A run left 'running'
        without the lock (its worker died and the lock went stale) or 'queued'
        for longer than the stale time (its task was lost) is closed as failed,
        so it does not block the collection forever."""
        now = datetime.now(UTC)
        with self.registry.unit_of_work() as uow:
            holder = uow.runs.lock_holder(collection_id)
            runs = uow.runs.open(collection_id)
        alive: list[RunRecord] = []
        for run in runs:
            lost = (run.status is RunStatus.RUNNING and holder != run.id) or (
                run.status is RunStatus.QUEUED and (now - run.created_at).total_seconds() > self.lock_stale_s
            )
            if lost:
                self._update_run(
                    run.id, RunUpdate(status=RunStatus.FAILED, error="lost: its worker stopped", finished_at=now)
                )
            else:
                alive.append(run)
        return alive

    def list_runs(self, name: str) -> list[RunRecord]:
        with self.registry.unit_of_work() as uow:
            return uow.runs.list_for(uow.collections.get(name).id)

    def get_run(self, name: str, run_id: str) -> RunRecord:
        with self.registry.unit_of_work() as uow:
            collection = uow.collections.get(name)
            run = uow.runs.get(run_id)
        if run is None or run.collection_id != collection.id:
            raise NotFoundError(f"run {run_id!r} not found")
        return run

    # --- versions ------------------------------------------------------------------
    def list_versions(self, name: str) -> list[VersionRecord]:
        with self.registry.unit_of_work() as uow:
            return uow.versions.list_for(uow.collections.get(name).id)

    def switch_to(self, collection_id: str, version: int, chunk_counts: dict[str, int] | None = None) -> None:
        """Serve ``version``: the alias moves in one Qdrant call, then the registry
        follows in one transaction (the old active version becomes 'previous',
        kept for rollback, and every document's chunk count is the new version's)."""
        self.store.point_alias(collection_id, version)
        try:
            if chunk_counts is None:
                with self.registry.unit_of_work() as uow:
                    documents = uow.documents.list_for(collection_id)
                chunk_counts = {d.id: self.store.count(collection_id, d.id) for d in documents}
            with self.registry.unit_of_work() as uow:
                dropped = uow.versions.activate(collection_id, version, keep_previous_s=self.keep_previous_s)
                uow.documents.set_chunk_counts(chunk_counts)
        except RagError:
            with self.registry.unit_of_work() as uow:
                active = uow.versions.active(collection_id)
            if active is not None:
                self.store.point_alias(collection_id, active.version)
            raise
        for old in dropped:
            self.store.drop_version(collection_id, old)

    def rollback(self, name: str) -> RunRecord:
        """Serve the previous version again; the one replaced becomes 'previous'."""
        with self.registry.unit_of_work() as uow:
            collection = uow.collections.get(name)
            previous = uow.versions.with_status(collection.id, VersionStatus.PREVIOUS)
        if not previous or previous[-1].version not in self.store.list_versions(collection.id):
            raise ConflictError(f"collection {name!r} has no previous version to roll back to")
        target = previous[-1]
        with self.registry.unit_of_work() as uow:
            active = uow.versions.active(collection.id)
        with self.registry.unit_of_work() as uow:
            # The run and the lock in one transaction: no run is left 'running'
            # without the lock, nor a lock without its run.
            run = uow.runs.create(collection.id, kind="rollback", trigger="manual")
            locked = uow.runs.acquire_lock(collection.id, run.id, stale_after_s=self.lock_stale_s)
            if locked:
                run = uow.runs.update(run.id, RunUpdate(status=RunStatus.RUNNING, started_at=datetime.now(UTC))) or run
            else:
                uow.runs.update(
                    run.id,
                    RunUpdate(status=RunStatus.SKIPPED, error="a re-index is running", finished_at=datetime.now(UTC)),
                )
        if not locked:
            raise ConflictError(f"a re-index of {name!r} is running; roll back when it is done")
        try:
            self.switch_to(collection.id, target.version)
        except RagError as exc:
            self._update_run(
                run.id, RunUpdate(status=RunStatus.FAILED, error=exc.message, finished_at=datetime.now(UTC))
            )
            raise
        finally:
            with self.registry.unit_of_work() as uow:
                uow.runs.release_lock(collection.id, run.id)
        done = self._update_run(
            run.id,
            RunUpdate(
                status=RunStatus.SUCCEEDED,
                from_version=active.version if active else None,
                to_version=target.version,
                finished_at=datetime.now(UTC),
            ),
        )
        assert done is not None
        return done

    def drop_expired_versions(self, now: datetime | None = None) -> list[VersionRecord]:
        """Versions kept for rollback whose time is up: dropped from Qdrant."""
        with self.registry.unit_of_work() as uow:
            expired = uow.versions.expired(now)
        for version in expired:
            try:
                self.store.drop_version(version.collection_id, version.version)
            except RagError:
                log.exception("cannot drop version %s of %s", version.version, version.collection_id)
                continue
            with self.registry.unit_of_work() as uow:
                uow.versions.set_status(version.collection_id, version.version, VersionStatus.DROPPED)
        return expired

    # --- golden questions -------------------------------------------------------
    def set_golden(self, name: str, jsonl: str) -> int:
        collection = self._collection(name)
        items = parse_golden_jsonl(jsonl)
        with self.registry.unit_of_work() as uow:
            return uow.golden.replace(collection.id, [GoldenRecord(q.question, q.answers, q.document) for q in items])

    def golden(self, collection_id: str) -> list[GoldenQuestion]:
        with self.registry.unit_of_work() as uow:
            golden = uow.golden.list_for(collection_id)
        return [GoldenQuestion(g.question, g.answers, g.document) for g in golden]

    def list_golden(self, name: str) -> list[GoldenQuestion]:
        return self.golden(self._collection(name).id)
