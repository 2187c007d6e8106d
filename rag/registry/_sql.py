"""What the repositories share: the session they work in, typed updates
applied to a row, and dialect-specific SQL."""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import TYPE_CHECKING, Any

from sqlalchemy import literal_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from rag.registry.tables import Base

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["Repository", "apply_changes", "insert_if_absent"]


class Repository:
    """One concern's queries, inside the unit of work that owns ``session``."""

    def __init__(self, session: Session) -> None:
        self._s = session


def apply_changes(row: Base, change: DataclassInstance) -> None:
    """Copies each field of ``change`` (a ``*Update`` dataclass whose fields
    are named as the row's columns) that is not None onto ``row``; an enum is
    stored as its value. None leaves a column as it is."""
    for f in dataclasses.fields(change):
        value = getattr(change, f.name)
        if value is not None:
            setattr(row, f.name, value.value if isinstance(value, Enum) else value)


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
