"""Golden questions of a collection, which the quality gate scores versions on."""

from __future__ import annotations

import json

from sqlalchemy import delete, select

from rag.registry._sql import Repository
from rag.registry.records import GoldenRecord
from rag.registry.tables import GoldenRow

__all__ = ["GoldenRepository"]


class GoldenRepository(Repository):
    def replace(self, collection_id: str, items: list[GoldenRecord]) -> int:
        self._s.execute(delete(GoldenRow).where(GoldenRow.collection_id == collection_id))
        self._s.add_all(
            GoldenRow(
                collection_id=collection_id,
                position=i,
                question=item.question,
                answers=json.dumps(item.answers),
                document=item.document,
            )
            for i, item in enumerate(items)
        )
        return len(items)

    def list_for(self, collection_id: str) -> list[GoldenRecord]:
        rows = self._s.scalars(
            select(GoldenRow).where(GoldenRow.collection_id == collection_id).order_by(GoldenRow.position)
        ).all()
        return [GoldenRecord(r.question, list(json.loads(r.answers)), r.document) for r in rows]
