"""Throw-away registry databases for tests: a SQLite file, or a fresh
PostgreSQL database on 127.0.0.1:5432 (trust auth) dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import service_available

__all__ = ["postgres_database", "registry_url_for"]

_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def postgres_database(prefix: str = "rag_unit") -> Iterator[str]:
    """A new, empty PostgreSQL database (SQLAlchemy URL); skips when none runs."""
    if not service_available(5432):
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def registry_url_for(kind: str, tmp_path: Path) -> Iterator[str]:
    """``kind``: 'sqlite' or 'postgresql'."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    with postgres_database() as url:
        yield url
