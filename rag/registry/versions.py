"""Index versions of a collection: which Qdrant collection the alias serves,
which one a full re-index builds, which one is kept for rollback."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select

from rag.errors import NotFoundError
from rag.registry._sql import Repository
from rag.registry.records import VersionRecord, VersionStatus, utc, utcnow
from rag.registry.tables import CollectionRow, VersionRow

__all__ = ["VersionRepository"]


def _record(row: VersionRow) -> VersionRecord:
    return VersionRecord(
        collection_id=row.collection_id,
        version=row.version,
        status=VersionStatus(row.status),
        embedding_model=row.embedding_model,
        dimension=row.dimension,
        chunking=row.chunking,
        created_at=utc(row.created_at) or utcnow(),
        activated_at=utc(row.activated_at),
        expires_at=utc(row.expires_at),
    )


class VersionRepository(Repository):
    def add(
        self,
        collection_id: str,
        version: int,
        status: VersionStatus,
        *,
        embedding_model: str,
        dimension: int,
        chunking: str | None = None,
    ) -> VersionRecord:
        now = utcnow()
        row = VersionRow(
            collection_id=collection_id,
            version=version,
            status=status.value,
            embedding_model=embedding_model,
            dimension=dimension,
            chunking=chunking,
            created_at=now,
            activated_at=now if status is VersionStatus.ACTIVE else None,
        )
        self._s.add(row)
        self._s.flush()
        return _record(row)

    def list_for(self, collection_id: str) -> list[VersionRecord]:
        rows = self._s.scalars(
            select(VersionRow).where(VersionRow.collection_id == collection_id).order_by(VersionRow.version)
        ).all()
        return [_record(r) for r in rows]

    def with_status(self, collection_id: str, status: VersionStatus) -> list[VersionRecord]:
        return [v for v in self.list_for(collection_id) if v.status is status]

    def active(self, collection_id: str) -> VersionRecord | None:
        """The served version (the newest active one; one at most in practice),
        read with one indexed query: every search reads it."""
        row = self._s.scalars(
            select(VersionRow)
            .where(VersionRow.collection_id == collection_id, VersionRow.status == VersionStatus.ACTIVE.value)
            .order_by(VersionRow.version.desc())
            .limit(1)
        ).first()
        return _record(row) if row is not None else None

    def served_by_name(self, name: str) -> tuple[str, VersionRecord | None]:
        """The id of the collection called ``name`` and its served version, in
        one query (every search starts with it)."""
        found = self._s.execute(
            select(CollectionRow.id, VersionRow)
            .outerjoin(
                VersionRow,
                (VersionRow.collection_id == CollectionRow.id) & (VersionRow.status == VersionStatus.ACTIVE.value),
            )
            .where(CollectionRow.name == name)
            .order_by(VersionRow.version.desc())
            .limit(1)
        ).first()
        if found is None:
            raise NotFoundError(f"collection {name!r} not found")
        return found[0], (_record(found[1]) if found[1] is not None else None)

    def next_number(self, collection_id: str) -> int:
        top = self._s.scalar(select(func.max(VersionRow.version)).where(VersionRow.collection_id == collection_id))
        return int(top or 0) + 1

    def set_status(self, collection_id: str, version: int, status: VersionStatus) -> None:
        row = self._s.scalars(
            select(VersionRow).where(VersionRow.collection_id == collection_id, VersionRow.version == version)
        ).first()
        if row is not None:
            row.status = status.value
            if status is not VersionStatus.PREVIOUS:
                row.expires_at = None

    def activate(self, collection_id: str, version: int, *, keep_previous_s: float) -> list[int]:
        """``version`` becomes active, the active one becomes 'previous' until
        now + keep_previous_s, and any older 'previous' is marked dropped.
        Returns the versions whose Qdrant collections to drop."""
        now = utcnow()
        dropped: list[int] = []
        for row in self._s.scalars(select(VersionRow).where(VersionRow.collection_id == collection_id)).all():
            if row.version == version:
                row.status = VersionStatus.ACTIVE.value
                row.activated_at = now
                row.expires_at = None
            elif row.status == VersionStatus.ACTIVE.value:
                row.status = VersionStatus.PREVIOUS.value
                row.expires_at = now + timedelta(seconds=keep_previous_s)
            elif row.status == VersionStatus.PREVIOUS.value:
                row.status = VersionStatus.DROPPED.value
                row.expires_at = None
                dropped.append(row.version)
        return dropped

    def expired(self, now: datetime | None = None) -> list[VersionRecord]:
        now = now or utcnow()
        rows = self._s.scalars(select(VersionRow).where(VersionRow.status == VersionStatus.PREVIOUS.value)).all()
        return [_record(r) for r in rows if (utc(r.expires_at) or now) <= now]

    def fail_building(self) -> None:
        """Embedded start-up: versions half-built when the process died."""
        for row in self._s.scalars(select(VersionRow).where(VersionRow.status == VersionStatus.BUILDING.value)).all():
            row.status = VersionStatus.FAILED.value
