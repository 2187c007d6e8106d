"""A registry made by the schema as it was at commit e4b7f23 (before migrations).

The table classes below are a frozen copy of that commit's ``rag/registry.py``
(``create_all``, no Alembic), so a test can build an old data directory
without the new code and check that start-up migrates it keeping every row.
Do not update them with the schema: they are the past.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    insert,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["OLD_METADATA", "make_old_registry"]


def _now() -> datetime:
    return datetime.now(UTC)


class _Base(DeclarativeBase):
    pass


class _Collection(_Base):
    __tablename__ = "collections"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class _Document(_Base):
    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("collection_id", "content_hash"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    collection_id: Mapped[str] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(512))
    content_hash: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    indexed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # User metadata given at upload (a JSON object); copied into every chunk's payload.
    doc_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, nullable=True)


class _Job(_Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    collection_id: Mapped[str] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), index=True
    )
    document_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class _IndexVersion(_Base):
    __tablename__ = "index_versions"
    __table_args__ = (UniqueConstraint("collection_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection_id: Mapped[str] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    embedding_model: Mapped[str] = mapped_column(String(1024))
    dimension: Mapped[int] = mapped_column(Integer)
    chunking: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class _FolderBinding(_Base):
    __tablename__ = "folder_bindings"
    collection_id: Mapped[str] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(Text)


class _FolderFile(_Base):
    __tablename__ = "folder_files"
    collection_id: Mapped[str] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    relpath: Mapped[str] = mapped_column(String(1024), primary_key=True)
    document_id: Mapped[str] = mapped_column(String(36), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    # False when the file matched a document that was already there (an upload):
    # the sync then never deletes or rewrites that document, only its own.
    owned: Mapped[bool] = mapped_column(Boolean, default=True)


class _Schedule(_Base):
    __tablename__ = "schedules"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    collection_id: Mapped[str] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    cron: Mapped[str] = mapped_column(String(255))
    timezone: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class _ScheduleClaim(_Base):
    """One row per (schedule, slot): the primary key is what makes two beats
    that see the same slot enqueue it once."""

    __tablename__ = "schedule_claims"
    schedule_id: Mapped[str] = mapped_column(
        ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True
    )
    slot_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    claimed_by: Mapped[str] = mapped_column(String(255))
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class _Run(_Base):
    __tablename__ = "reindex_runs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    collection_id: Mapped[str] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(16))
    schedule_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    slot_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    added: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    deleted: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    score_current: Mapped[float | None] = mapped_column(Float, nullable=True)
    score_candidate: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class _ReindexLock(_Base):
    """At most one row per collection: inserting it is taking the lock."""

    __tablename__ = "reindex_locks"
    collection_id: Mapped[str] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    run_id: Mapped[str] = mapped_column(String(36))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class _Golden(_Base):
    __tablename__ = "golden_questions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection_id: Mapped[str] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    question: Mapped[str] = mapped_column(Text)
    answers: Mapped[str] = mapped_column(Text)  # JSON list
    document: Mapped[str] = mapped_column(String(512))


OLD_METADATA = _Base.metadata


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_old_registry(url: str) -> dict[str, list[dict[str, Any]]]:
    """Create the e4b7f23 tables in ``url`` and fill them; returns the rows
    written, by table, for the test to compare with what it reads back."""
    engine = create_engine(url)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    t0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    c1, c2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
    rows: dict[str, list[dict[str, Any]]] = {
        "collections": [
            {"id": c1, "name": "handbook", "created_at": t0},
            {"id": c2, "name": "papers.2026", "created_at": t0 + timedelta(minutes=1)},
        ],
        "documents": [
            {
                "id": f"d000000{i}-0000-4000-8000-000000000000",
                "collection_id": c1 if i < 3 else c2,
                "filename": name,
                "content_hash": f"{i:064x}",
                "size_bytes": 1000 + i,
                "content_type": ctype,
                "status": status,
                "error": "PDF has no text layer" if status == "failed" else None,
                "chunk_count": 3 * i if status == "indexed" else 0,
                "created_at": t0 + timedelta(minutes=2 + i),
                "updated_at": t0 + timedelta(minutes=3 + i),
                "indexed_at": t0 + timedelta(minutes=4 + i) if status == "indexed" else None,
                "metadata": meta,
            }
            for i, (name, ctype, status, meta) in enumerate(
                [
                    ("intro.md", "text/markdown", "indexed", {"team": "ops", "year": 2026, "tags": ["a", "b"]}),
                    ("scan.pdf", "application/pdf", "failed", {}),
                    ("notes.txt", None, "queued", None),
                    ("paper.docx", None, "indexed", {"reviewed": True}),
                ]
            )
        ],
        "jobs": [
            {
                "id": "j0000000-0000-4000-8000-000000000000",
                "kind": "index",
                "collection_id": c1,
                "document_id": "d0000000-0000-4000-8000-000000000000",
                "status": "succeeded",
                "error": None,
                "created_at": t0,
                "started_at": t0,
                "finished_at": t0 + timedelta(seconds=5),
            }
        ],
        "index_versions": [
            {
                "collection_id": c1,
                "version": 1,
                "status": "previous",
                "embedding_model": "sentence-transformers/all-MiniLM-L6-v2",
                "dimension": 384,
                "chunking": None,
                "created_at": t0,
                "activated_at": t0,
                "expires_at": t0 + timedelta(days=7),
            },
            {
                "collection_id": c1,
                "version": 2,
                "status": "active",
                "embedding_model": "sentence-transformers/all-MiniLM-L6-v2",
                "dimension": 384,
                "chunking": "max_tokens=256 overlap_tokens=32",
                "created_at": t0 + timedelta(hours=1),
                "activated_at": t0 + timedelta(hours=2),
                "expires_at": None,
            },
            {
                "collection_id": c2,
                "version": 1,
                "status": "active",
                "embedding_model": "sentence-transformers/all-MiniLM-L6-v2",
                "dimension": 384,
                "chunking": None,
                "created_at": t0,
                "activated_at": t0,
                "expires_at": None,
            },
        ],
        "folder_bindings": [{"collection_id": c1, "path": "/srv/docs/handbook"}],
        "folder_files": [
            {
                "collection_id": c1,
                "relpath": "intro.md",
                "document_id": "d0000000-0000-4000-8000-000000000000",
                "content_hash": f"{0:064x}",
                "owned": True,
            },
            {
                "collection_id": c1,
                "relpath": "sub/notes.txt",
                "document_id": "d0000002-0000-4000-8000-000000000000",
                "content_hash": f"{2:064x}",
                "owned": False,
            },
        ],
        "schedules": [
            {
                "id": "s1000000-0000-4000-8000-000000000000",
                "collection_id": c1,
                "cron": "0 3 * * *",
                "timezone": "Europe/Paris",
                "kind": "sync",
                "enabled": True,
                "created_at": t0,
                "updated_at": t0,
            },
            {
                "id": "s2000000-0000-4000-8000-000000000000",
                "collection_id": c2,
                "cron": "*/15 * * * *",
                "timezone": "UTC",
                "kind": "full",
                "enabled": False,
                "created_at": t0,
                "updated_at": t0 + timedelta(hours=1),
            },
        ],
        "schedule_claims": [
            {
                "schedule_id": "s1000000-0000-4000-8000-000000000000",
                "slot_at": t0 + timedelta(hours=18),
                "claimed_by": "beat-1",
                "claimed_at": t0 + timedelta(hours=18),
            }
        ],
        "reindex_runs": [
            {
                "id": "r1000000-0000-4000-8000-000000000000",
                "collection_id": c1,
                "kind": "full",
                "trigger": "manual",
                "schedule_id": None,
                "slot_at": None,
                "status": "succeeded",
                "added": 0,
                "updated": 3,
                "deleted": 0,
                "unchanged": 0,
                "failed": 1,
                "from_version": 1,
                "to_version": 2,
                "score_current": 0.5,
                "score_candidate": 0.75,
                "error": None,
                "created_at": t0 + timedelta(hours=1),
                "started_at": t0 + timedelta(hours=1, seconds=1),
                "finished_at": t0 + timedelta(hours=2),
            },
            {
                "id": "r2000000-0000-4000-8000-000000000000",
                "collection_id": c1,
                "kind": "sync",
                "trigger": "schedule",
                "schedule_id": "s1000000-0000-4000-8000-000000000000",
                "slot_at": t0 + timedelta(hours=18),
                "status": "running",
                "added": 1,
                "updated": 0,
                "deleted": 0,
                "unchanged": 2,
                "failed": 0,
                "from_version": None,
                "to_version": None,
                "score_current": None,
                "score_candidate": None,
                "error": None,
                "created_at": t0 + timedelta(hours=18),
                "started_at": t0 + timedelta(hours=18, seconds=1),
                "finished_at": None,
            },
        ],
        "reindex_locks": [
            {"collection_id": c1, "run_id": "r2000000-0000-4000-8000-000000000000", "acquired_at": t0}
        ],
        "golden_questions": [
            {
                "collection_id": c1,
                "position": 0,
                "question": "Who runs the on-call rota?",
                "answers": json.dumps(["the ops team"]),
                "document": "intro.md",
            }
        ],
    }
    with engine.begin() as conn:
        _Base.metadata.create_all(conn)
        for table in _Base.metadata.sorted_tables:
            if rows.get(table.name):
                conn.execute(insert(table), rows[table.name])
    engine.dispose()
    return rows
