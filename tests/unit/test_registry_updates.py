"""Typed updates (``RunUpdate``, ``ScheduleUpdate``) reach the row through one
helper (``rag.registry._sql.apply_changes``): each field names a column, and a
field left at None leaves its column as it is."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from rag.registry import Database, RunStatus, RunUpdate, ScheduleUpdate
from rag.registry.tables import RunRow, ScheduleRow


def test_every_update_field_is_a_column_of_its_row() -> None:
    for update, row in ((RunUpdate, RunRow), (ScheduleUpdate, ScheduleRow)):
        columns = set(row.__table__.columns.keys())
        assert {f.name for f in dataclasses.fields(update)} <= columns, update


def test_updates_change_only_the_fields_given(tmp_path: Path) -> None:
    registry = Database(f"sqlite:///{tmp_path / 'r.db'}")
    started = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
    with registry.unit_of_work() as uow:
        c = uow.collections.create("c")
        run = uow.runs.create(c.id, kind="sync", trigger="manual")
        schedule = uow.schedules.create(c.id, cron="0 3 * * *", timezone="UTC", kind="sync", enabled=True)
    with registry.unit_of_work() as uow:
        uow.runs.update(run.id, RunUpdate(status=RunStatus.RUNNING, added=3, score_current=0.5, started_at=started))
        uow.runs.update(run.id, RunUpdate(failed=1, error="one file"))
        uow.schedules.update(c.id, schedule.id, ScheduleUpdate(enabled=False))
    with registry.unit_of_work() as uow:
        got = uow.runs.get(run.id)
        again = uow.schedules.get(c.id, schedule.id)
    assert got is not None
    assert (got.status, got.added, got.failed, got.updated) == (RunStatus.RUNNING, 3, 1, 0)
    assert (got.score_current, got.error, got.started_at) == (0.5, "one file", started)
    assert (again.enabled, again.cron, again.timezone) == (False, "0 3 * * *", "UTC")
