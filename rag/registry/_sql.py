"""Dialect-specific SQL the repositories share."""

from __future__ import annotations

from typing import Any

from sqlalchemy import literal_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from rag.registry.tables import Base

__all__ = ["insert_if_absent"]


def insert_if_absent(session: Session, table: type[Base], values: dict[str, Any], *, key: list[str]) -> bool:
    """Insert one row unless a row with the same ``key`` (a primary key or a
    unique constraint) exists; True when this call inserted it.

    ``INSERT ... ON CONFLICT DO NOTHING``: the database decides, so two
    processes racing for one key get exactly one True, and no failed statement
    spoils the caller's transaction.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table).values(**values).on_conflict_do_nothing(index_elements=key)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing(index_elements=key)
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"insert-if-absent is not written for {dialect}")
    # RETURNING rather than rowcount, which some drivers leave at -1: a row
    # comes back only when this statement inserted it.
    return session.execute(stmt.returning(literal_column("1"))).first() is not None
