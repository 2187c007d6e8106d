"""API keys: name, scopes and the HMAC of the key (never the key)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Row

from rag.registry._sql import Repository, insert_if_absent
from rag.registry.records import ApiKeyRecord, utc, utcnow
from rag.registry.tables import ApiKeyRow

__all__ = ["ApiKeyRepository", "key_by_hash"]


def _record(row: ApiKeyRow | Row[Any]) -> ApiKeyRecord:
    """An ORM row or a Core row of the table: the same attributes."""
    return ApiKeyRecord(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=list(row.scopes),
        created_at=utc(row.created_at) or utcnow(),
        revoked_at=utc(row.revoked_at),
    )


def key_by_hash(conn: Connection, key_hash: str) -> ApiKeyRecord | None:
    """The key with this hash, read in one Core query (no ORM session): the
    door asks this for every request."""
    row = conn.execute(select(ApiKeyRow.__table__).where(ApiKeyRow.key_hash == key_hash)).first()
    return None if row is None else _record(row)


class ApiKeyRepository(Repository):
    def add(
        self,
        *,
        name: str,
        key_hash: str,
        prefix: str,
        scopes: list[str],
        key_id: str | None = None,
        if_absent: bool = False,
    ) -> ApiKeyRecord | None:
        """A new key row. With ``if_absent``, nothing happens (None) when a key
        with this id exists already, revoked or not."""
        record = ApiKeyRecord(
            id=key_id or str(uuid.uuid4()),
            name=name,
            prefix=prefix,
            scopes=scopes,
            created_at=utcnow(),
            revoked_at=None,
        )
        values = {
            "id": record.id,
            "name": name,
            "key_hash": key_hash,
            "prefix": prefix,
            "scopes": scopes,
            "created_at": record.created_at,
            "revoked_at": None,
        }
        if if_absent:
            return record if insert_if_absent(self._s, ApiKeyRow, values, key=["id"]) else None
        self._s.add(ApiKeyRow(**values))
        self._s.flush()
        return record

    def find_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        row = self._s.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash)).first()
        return _record(row) if row else None

    def list_all(self) -> list[ApiKeyRecord]:
        return [_record(r) for r in self._s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id))]

    def revoke(self, key_id: str) -> ApiKeyRecord | None:
        row = self._s.get(ApiKeyRow, key_id)
        if row is None:
            return None
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return _record(row)
