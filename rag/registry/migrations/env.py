"""Alembic environment: always run through ``rag.registry.migrate`` with a
connection handed in (no alembic.ini, no URL read here)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from rag.registry.tables import Base

connection: Connection | None = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through rag.registry.migrate, which hands in a connection")

# render_as_batch: SQLite alters a table by copying it; Alembic's batch mode does that.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
