"""Collections: names, ids and per-status document counts."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select

from rag.errors import AlreadyExistsError, NotFoundError
from rag.registry._sql import Repository, insert_if_absent
from rag.registry.records import CollectionRecord, DocumentStatus, utc, utcnow
from rag.registry.tables import CollectionRow, DocumentRow

__all__ = ["CollectionRepository"]


def _record(row: CollectionRow) -> CollectionRecord:
    return CollectionRecord(id=row.id, name=row.name, created_at=utc(row.created_at) or utcnow())


class CollectionRepository(Repository):
    def create(self, name: str) -> CollectionRecord:
        record = CollectionRecord(id=str(uuid.uuid4()), name=name, created_at=utcnow())
        values = {"id": record.id, "name": record.name, "created_at": record.created_at}
        if not insert_if_absent(self._s, CollectionRow, values, key=["name"]):
            raise AlreadyExistsError(f"collection {name!r} already exists")
        return record

    def get(self, name: str) -> CollectionRecord:
        row = self._s.scalars(select(CollectionRow).where(CollectionRow.name == name)).first()
        if row is None:
            raise NotFoundError(f"collection {name!r} not found")
        return _record(row)

    def list_all(self) -> list[CollectionRecord]:
        return [_record(r) for r in self._s.scalars(select(CollectionRow).order_by(CollectionRow.name)).all()]

    def delete(self, collection_id: str) -> None:
        """The collection and its documents; the other tables follow by cascade."""
        self._s.execute(delete(DocumentRow).where(DocumentRow.collection_id == collection_id))
        self._s.execute(delete(CollectionRow).where(CollectionRow.id == collection_id))

    def stats(self, collection_id: str) -> dict[str, int]:
        """Document counts by status, plus the total and the chunk count."""
        rows = self._s.execute(
            select(DocumentRow.status, func.count(), func.coalesce(func.sum(DocumentRow.chunk_count), 0))
            .where(DocumentRow.collection_id == collection_id)
            .group_by(DocumentRow.status)
        ).all()
        stats = {s.value: 0 for s in DocumentStatus}
        chunks = 0
        for status, count, chunk_sum in rows:
            stats[str(status)] = int(count)
            chunks += int(chunk_sum)
        stats["documents"] = sum(stats[s.value] for s in DocumentStatus)
        stats["chunks"] = chunks
        return stats
