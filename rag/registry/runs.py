"""Re-index runs and the per-collection re-index lock (one row per collection:
inserting it is taking the lock)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from rag.registry._sql import Repository, apply_changes, insert_if_absent
from rag.registry.records import OPEN_RUN_STATUSES, RunRecord, RunStatus, RunUpdate, utc, utcnow
from rag.registry.tables import ReindexLockRow, RunRow

__all__ = ["RunRepository"]


def _record(row: RunRow) -> RunRecord:
    return RunRecord(
        id=row.id,
        collection_id=row.collection_id,
        kind=row.kind,
        trigger=row.trigger,
        schedule_id=row.schedule_id,
        slot_at=utc(row.slot_at),
        status=RunStatus(row.status),
        added=row.added,
        updated=row.updated,
        deleted=row.deleted,
        unchanged=row.unchanged,
        failed=row.failed,
        from_version=row.from_version,
        to_version=row.to_version,
        score_current=row.score_current,
        score_candidate=row.score_candidate,
        error=row.error,
        created_at=utc(row.created_at) or utcnow(),
        started_at=utc(row.started_at),
        finished_at=utc(row.finished_at),
    )


class RunRepository(Repository):
    def create(
        self,
        collection_id: str,
        *,
        kind: str,
        trigger: str,
        status: RunStatus = RunStatus.QUEUED,
        schedule_id: str | None = None,
        slot_at: datetime | None = None,
        error: str | None = None,
    ) -> RunRecord:
        now = utcnow()
        row = RunRow(
            id=str(uuid.uuid4()),
            collection_id=collection_id,
            kind=kind,
            trigger=trigger,
            schedule_id=schedule_id,
            slot_at=slot_at.astimezone(UTC) if slot_at else None,
            status=status.value,
            added=0,
            updated=0,
            deleted=0,
            unchanged=0,
            failed=0,
            error=error,
            created_at=now,
            finished_at=now if status not in (RunStatus.QUEUED, RunStatus.RUNNING) else None,
        )
        self._s.add(row)
        self._s.flush()
        return _record(row)

    def update(self, run_id: str, change: RunUpdate) -> RunRecord | None:
        row = self._s.get(RunRow, run_id)
        if row is None:
            return None
        apply_changes(row, change)
        return _record(row)

    def get(self, run_id: str) -> RunRecord | None:
        row = self._s.get(RunRow, run_id)
        return _record(row) if row else None

    def list_for(self, collection_id: str, limit: int = 100) -> list[RunRecord]:
        rows = self._s.scalars(
            select(RunRow)
            .where(RunRow.collection_id == collection_id)
            .order_by(RunRow.created_at.desc(), RunRow.id)
            .limit(limit)
        ).all()
        return [_record(r) for r in rows]

    def open(self, collection_id: str | None = None) -> list[RunRecord]:
        query = select(RunRow).where(RunRow.status.in_(OPEN_RUN_STATUSES))
        if collection_id is not None:
            query = query.where(RunRow.collection_id == collection_id)
        return [_record(r) for r in self._s.scalars(query.order_by(RunRow.created_at)).all()]

    def fail_running(self, reason: str) -> None:
        for row in self._s.scalars(select(RunRow).where(RunRow.status == RunStatus.RUNNING.value)).all():
            row.status = RunStatus.FAILED.value
            row.error = reason
            row.finished_at = utcnow()

    # --- the lock ----------------------------------------------------------------
    def acquire_lock(self, collection_id: str, run_id: str, *, stale_after_s: float) -> bool:
        """Insert the collection's lock row; False if another run holds it. A row
        older than ``stale_after_s`` (its worker died) is taken over."""
        now = utcnow()
        self._s.execute(
            delete(ReindexLockRow).where(
                ReindexLockRow.collection_id == collection_id,
                ReindexLockRow.acquired_at < now - timedelta(seconds=stale_after_s),
            )
        )
        values = {"collection_id": collection_id, "run_id": run_id, "acquired_at": now}
        return insert_if_absent(self._s, ReindexLockRow, values, key=["collection_id"])

    def release_lock(self, collection_id: str, run_id: str) -> None:
        self._s.execute(
            delete(ReindexLockRow).where(ReindexLockRow.collection_id == collection_id, ReindexLockRow.run_id == run_id)
        )

    def lock_holder(self, collection_id: str) -> str | None:
        row = self._s.get(ReindexLockRow, collection_id)
        return row.run_id if row else None

    def clear_locks(self) -> None:
        self._s.execute(delete(ReindexLockRow))
