"""Cron schedules of re-index runs, and the (schedule, slot) claims that make
each slot start once however many beats see it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import delete, select

from rag.errors import NotFoundError
from rag.registry._sql import Repository, apply_changes, insert_if_absent
from rag.registry.records import ScheduleRecord, ScheduleUpdate, utc, utcnow
from rag.registry.tables import ScheduleClaimRow, ScheduleRow

__all__ = ["ScheduleRepository"]


def _record(row: ScheduleRow) -> ScheduleRecord:
    return ScheduleRecord(
        id=row.id,
        collection_id=row.collection_id,
        cron=row.cron,
        timezone=row.timezone,
        kind=row.kind,
        enabled=bool(row.enabled),
        created_at=utc(row.created_at) or utcnow(),
        updated_at=utc(row.updated_at) or utcnow(),
    )


class ScheduleRepository(Repository):
    def create(self, collection_id: str, *, cron: str, timezone: str, kind: str, enabled: bool) -> ScheduleRecord:
        now = utcnow()
        row = ScheduleRow(
            id=str(uuid.uuid4()),
            collection_id=collection_id,
            cron=cron,
            timezone=timezone,
            kind=kind,
            enabled=enabled,
            created_at=now,
            updated_at=now,
        )
        self._s.add(row)
        self._s.flush()
        return _record(row)

    def _row(self, collection_id: str, schedule_id: str) -> ScheduleRow:
        row = self._s.get(ScheduleRow, schedule_id)
        if row is None or row.collection_id != collection_id:
            raise NotFoundError(f"schedule {schedule_id!r} not found")
        return row

    def get(self, collection_id: str, schedule_id: str) -> ScheduleRecord:
        return _record(self._row(collection_id, schedule_id))

    def list_for(self, collection_id: str | None = None) -> list[ScheduleRecord]:
        query = select(ScheduleRow)
        if collection_id is not None:
            query = query.where(ScheduleRow.collection_id == collection_id)
        return [_record(r) for r in self._s.scalars(query.order_by(ScheduleRow.created_at, ScheduleRow.id)).all()]

    def update(self, collection_id: str, schedule_id: str, change: ScheduleUpdate) -> ScheduleRecord:
        row = self._row(collection_id, schedule_id)
        apply_changes(row, change)
        row.updated_at = utcnow()
        return _record(row)

    def delete(self, collection_id: str, schedule_id: str) -> None:
        row = self._row(collection_id, schedule_id)
        self._s.execute(delete(ScheduleClaimRow).where(ScheduleClaimRow.schedule_id == schedule_id))
        self._s.delete(row)

    def claim_slot(self, schedule_id: str, slot_at: datetime, claimed_by: str) -> bool:
        """True for exactly one caller per (schedule, slot), across processes."""
        values = {
            "schedule_id": schedule_id,
            "slot_at": slot_at.astimezone(UTC),
            "claimed_by": claimed_by,
            "claimed_at": utcnow(),
        }
        return insert_if_absent(self._s, ScheduleClaimRow, values, key=["schedule_id", "slot_at"])
