"""The registry of collections, documents and jobs (SQLAlchemy), and of what
re-indexing needs: index versions, folder bindings, cron schedules with their
claimed slots, re-index runs, the per-collection re-index lock and golden questions.

SQLite in the data directory by default, PostgreSQL (or any SQLAlchemy URL) by
setting. This module is the only one that talks SQL; it returns plain frozen
records so callers never hold sessions or ORM objects.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
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
    delete,
    event,
    func,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from rag.errors import AlreadyExistsError, BackendError, NotFoundError

__all__ = [
    "CollectionRecord",
    "DocumentRecord",
    "DocumentStatus",
    "FolderFileRecord",
    "GoldenRecord",
    "JobRecord",
    "Registry",
    "RunRecord",
    "RunStatus",
    "ScheduleRecord",
    "VersionRecord",
    "VersionStatus",
]


_SCHEMA_LOCK_KEY = 0x7261675F736368  # any fixed bigint: "rag_sch"


def _now() -> datetime:
    return datetime.now(UTC)


class DocumentStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    INDEXED = "indexed"
    FAILED = "failed"


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
    status: Mapped[str] = mapped_column(String(16), default=DocumentStatus.QUEUED.value)
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


class VersionStatus(StrEnum):
    BUILDING = "building"  # a full re-index is writing it; queries don't see it
    ACTIVE = "active"  # the alias points at it
    PREVIOUS = "previous"  # kept for rollback until expires_at
    REJECTED = "rejected"  # failed the quality gate; dropped
    FAILED = "failed"  # the build failed; dropped
    DROPPED = "dropped"  # retention over; dropped


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    REJECTED = "rejected"  # quality gate: the current version stays
    FAILED = "failed"
    SKIPPED = "skipped"  # another re-index of the collection held the lock


OPEN_RUN_STATUSES = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)


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


@dataclass(frozen=True)
class VersionRecord:
    collection_id: str
    version: int
    status: VersionStatus
    embedding_model: str
    dimension: int
    chunking: str | None
    created_at: datetime
    activated_at: datetime | None
    expires_at: datetime | None


@dataclass(frozen=True)
class FolderFileRecord:
    relpath: str
    document_id: str
    content_hash: str
    owned: bool = True


@dataclass(frozen=True)
class ScheduleRecord:
    id: str
    collection_id: str
    cron: str
    timezone: str
    kind: str
    enabled: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RunRecord:
    id: str
    collection_id: str
    kind: str
    trigger: str
    schedule_id: str | None
    slot_at: datetime | None
    status: RunStatus
    added: int
    updated: int
    deleted: int
    unchanged: int
    failed: int
    from_version: int | None
    to_version: int | None
    score_current: float | None
    score_candidate: float | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class GoldenRecord:
    question: str
    answers: list[str]
    document: str


@dataclass(frozen=True)
class CollectionRecord:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class DocumentRecord:
    id: str
    collection_id: str
    filename: str
    content_hash: str
    size_bytes: int
    content_type: str | None
    status: DocumentStatus
    error: str | None
    chunk_count: int
    created_at: datetime
    updated_at: datetime
    indexed_at: datetime | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: str
    collection_id: str
    document_id: str | None
    status: str
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def _utc(value: datetime | None) -> datetime | None:
    # SQLite drops the zone; every stored value is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _collection(row: _Collection) -> CollectionRecord:
    return CollectionRecord(id=row.id, name=row.name, created_at=_utc(row.created_at) or _now())


def _document(row: _Document) -> DocumentRecord:
    return DocumentRecord(
        id=row.id,
        collection_id=row.collection_id,
        filename=row.filename,
        content_hash=row.content_hash,
        size_bytes=row.size_bytes,
        content_type=row.content_type,
        status=DocumentStatus(row.status),
        error=row.error,
        chunk_count=row.chunk_count,
        created_at=_utc(row.created_at) or _now(),
        updated_at=_utc(row.updated_at) or _now(),
        indexed_at=_utc(row.indexed_at),
        metadata=dict(row.doc_metadata or {}),
    )


def _job(row: _Job) -> JobRecord:
    return JobRecord(
        id=row.id,
        kind=row.kind,
        collection_id=row.collection_id,
        document_id=row.document_id,
        status=row.status,
        error=row.error,
        created_at=_utc(row.created_at) or _now(),
        started_at=_utc(row.started_at),
        finished_at=_utc(row.finished_at),
    )


class Registry:
    """Collections, documents and jobs, stored through SQLAlchemy."""

    def __init__(self, url: str) -> None:
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            # The embedded worker runs in threads of the API process.
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        try:
            self._engine = create_engine(url, **kwargs)
        except (SQLAlchemyError, ImportError) as exc:
            raise BackendError(f"cannot open the registry database: {exc}") from exc
        if url.startswith("sqlite"):
            event.listen(self._engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        try:
            with self._engine.begin() as conn:
                if self._engine.dialect.name == "postgresql":
                    # The API, workers and beats may start at once on an empty
                    # database: one creates the tables, the others wait and find them.
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
                _Base.metadata.create_all(conn)
        except SQLAlchemyError as exc:
            raise BackendError(f"cannot open the registry database: {exc}") from exc

    def close(self) -> None:
        self._engine.dispose()

    def ping(self) -> None:
        with self._session() as session:
            session.execute(select(1))

    @contextmanager
    def _session(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise BackendError(f"registry database error: {exc}") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # --- collections ---------------------------------------------------------
    def create_collection(self, name: str) -> CollectionRecord:
        row = _Collection(id=str(uuid.uuid4()), name=name, created_at=_now())
        try:
            with self._session() as session:
                session.add(row)
                session.flush()
        except BackendError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                raise AlreadyExistsError(f"collection {name!r} already exists") from exc
            raise
        return _collection(row)

    def get_collection(self, name: str) -> CollectionRecord:
        with self._session() as session:
            row = session.scalars(select(_Collection).where(_Collection.name == name)).first()
            if row is None:
                raise NotFoundError(f"collection {name!r} not found")
            return _collection(row)

    def list_collections(self) -> list[CollectionRecord]:
        with self._session() as session:
            rows = session.scalars(select(_Collection).order_by(_Collection.name)).all()
            return [_collection(r) for r in rows]

    def delete_collection(self, collection_id: str) -> None:
        with self._session() as session:
            for model in (_Job, _Document):
                for obj in session.scalars(
                    select(model).where(model.collection_id == collection_id)
                ).all():
                    session.delete(obj)
            row = session.get(_Collection, collection_id)
            if row is not None:
                session.delete(row)

    def collection_stats(self, collection_id: str) -> dict[str, int]:
        """Document counts by status, plus the total chunk count."""
        with self._session() as session:
            rows = session.execute(
                select(_Document.status, func.count(), func.coalesce(func.sum(_Document.chunk_count), 0))
                .where(_Document.collection_id == collection_id)
                .group_by(_Document.status)
            ).all()
        stats = {s.value: 0 for s in DocumentStatus}
        chunks = 0
        for status, count, chunk_sum in rows:
            stats[str(status)] = int(count)
            chunks += int(chunk_sum)
        stats["documents"] = sum(stats[s.value] for s in DocumentStatus)
        stats["chunks"] = chunks
        return stats

    # --- documents -----------------------------------------------------------
    def add_document(
        self,
        *,
        collection_id: str,
        filename: str,
        content_hash: str,
        size_bytes: int,
        content_type: str | None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[DocumentRecord, bool]:
        """Register a document; returns (record, created). Identical content in the
        same collection returns the existing record and ``created=False``."""
        existing = self.find_document_by_hash(collection_id, content_hash)
        if existing is not None:
            return existing, False
        now = _now()
        row = _Document(
            id=str(uuid.uuid4()),
            collection_id=collection_id,
            filename=filename,
            content_hash=content_hash,
            size_bytes=size_bytes,
            content_type=content_type,
            status=DocumentStatus.QUEUED.value,
            chunk_count=0,
            created_at=now,
            updated_at=now,
            doc_metadata=metadata or {},
        )
        try:
            with self._session() as session:
                session.add(row)
        except BackendError as exc:
            # Two identical uploads raced; the other one won.
            if isinstance(exc.__cause__, IntegrityError):
                again = self.find_document_by_hash(collection_id, content_hash)
                if again is not None:
                    return again, False
            raise
        return _document(row), True

    def find_document_by_hash(self, collection_id: str, content_hash: str) -> DocumentRecord | None:
        with self._session() as session:
            row = session.scalars(
                select(_Document).where(
                    _Document.collection_id == collection_id,
                    _Document.content_hash == content_hash,
                )
            ).first()
            return _document(row) if row else None

    def get_document(self, collection_id: str, document_id: str) -> DocumentRecord:
        with self._session() as session:
            row = session.get(_Document, document_id)
            if row is None or row.collection_id != collection_id:
                raise NotFoundError(f"document {document_id!r} not found")
            return _document(row)

    def get_document_by_id(self, document_id: str) -> DocumentRecord | None:
        with self._session() as session:
            row = session.get(_Document, document_id)
            return _document(row) if row else None

    def list_documents(self, collection_id: str) -> list[DocumentRecord]:
        with self._session() as session:
            rows = session.scalars(
                select(_Document)
                .where(_Document.collection_id == collection_id)
                .order_by(_Document.created_at, _Document.id)
            ).all()
            return [_document(r) for r in rows]

    def get_documents(self, document_ids: list[str]) -> dict[str, DocumentRecord]:
        if not document_ids:
            return {}
        with self._session() as session:
            rows = session.scalars(select(_Document).where(_Document.id.in_(document_ids))).all()
            return {r.id: _document(r) for r in rows}

    def set_document_status(
        self,
        document_id: str,
        status: DocumentStatus,
        *,
        error: str | None = None,
        chunk_count: int | None = None,
    ) -> DocumentRecord | None:
        with self._session() as session:
            row = session.get(_Document, document_id)
            if row is None:
                return None
            now = _now()
            row.status = status.value
            row.error = error
            row.updated_at = now
            if chunk_count is not None:
                row.chunk_count = chunk_count
            if status is DocumentStatus.INDEXED:
                row.indexed_at = now
            return _document(row)

    def delete_document(self, document_id: str) -> None:
        with self._session() as session:
            row = session.get(_Document, document_id)
            if row is not None:
                session.delete(row)

    def count_documents_with_hash(self, content_hash: str) -> int:
        with self._session() as session:
            return int(
                session.scalar(
                    select(func.count()).select_from(_Document).where(
                        _Document.content_hash == content_hash
                    )
                )
                or 0
            )

    # --- jobs ----------------------------------------------------------------
    def start_job(self, *, kind: str, collection_id: str, document_id: str | None) -> JobRecord:
        now = _now()
        row = _Job(
            id=str(uuid.uuid4()),
            kind=kind,
            collection_id=collection_id,
            document_id=document_id,
            status="running",
            created_at=now,
            started_at=now,
        )
        with self._session() as session:
            session.add(row)
        return _job(row)

    def finish_job(self, job_id: str, *, status: str, error: str | None = None) -> None:
        with self._session() as session:
            row = session.get(_Job, job_id)
            if row is not None:
                row.status = status
                row.error = error
                row.finished_at = _now()

    def list_jobs(self, collection_id: str, document_id: str | None = None) -> list[JobRecord]:
        with self._session() as session:
            query = select(_Job).where(_Job.collection_id == collection_id)
            if document_id is not None:
                query = query.where(_Job.document_id == document_id)
            rows = session.scalars(query.order_by(_Job.created_at)).all()
            return [_job(r) for r in rows]

    # --- index versions --------------------------------------------------------
    def add_version(
        self,
        collection_id: str,
        version: int,
        status: VersionStatus,
        *,
        embedding_model: str,
        dimension: int,
        chunking: str | None = None,
    ) -> VersionRecord:
        now = _now()
        row = _IndexVersion(
            collection_id=collection_id,
            version=version,
            status=status.value,
            embedding_model=embedding_model,
            dimension=dimension,
            chunking=chunking,
            created_at=now,
            activated_at=now if status is VersionStatus.ACTIVE else None,
        )
        with self._session() as session:
            session.add(row)
        return _version(row)

    def list_versions(self, collection_id: str) -> list[VersionRecord]:
        with self._session() as session:
            rows = session.scalars(
                select(_IndexVersion)
                .where(_IndexVersion.collection_id == collection_id)
                .order_by(_IndexVersion.version)
            ).all()
            return [_version(r) for r in rows]

    def versions_with_status(self, collection_id: str, status: VersionStatus) -> list[VersionRecord]:
        return [v for v in self.list_versions(collection_id) if v.status is status]

    def active_version(self, collection_id: str) -> VersionRecord | None:
        found = self.versions_with_status(collection_id, VersionStatus.ACTIVE)
        return found[-1] if found else None

    def next_version_number(self, collection_id: str) -> int:
        with self._session() as session:
            top = session.scalar(
                select(func.max(_IndexVersion.version)).where(_IndexVersion.collection_id == collection_id)
            )
        return int(top or 0) + 1

    def set_version_status(self, collection_id: str, version: int, status: VersionStatus) -> None:
        with self._session() as session:
            row = session.scalars(
                select(_IndexVersion).where(
                    _IndexVersion.collection_id == collection_id, _IndexVersion.version == version
                )
            ).first()
            if row is not None:
                row.status = status.value
                if status is not VersionStatus.PREVIOUS:
                    row.expires_at = None

    def activate_version(self, collection_id: str, version: int, *, keep_previous_s: float) -> list[int]:
        """In one transaction: ``version`` becomes active, the active one becomes
        'previous' until now + keep_previous_s, and any older 'previous' is
        marked dropped. Returns the versions whose Qdrant collections to drop."""
        now = _now()
        dropped: list[int] = []
        with self._session() as session:
            rows = session.scalars(
                select(_IndexVersion).where(_IndexVersion.collection_id == collection_id)
            ).all()
            for row in rows:
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

    def expired_versions(self, now: datetime | None = None) -> list[VersionRecord]:
        now = now or _now()
        with self._session() as session:
            rows = session.scalars(
                select(_IndexVersion).where(_IndexVersion.status == VersionStatus.PREVIOUS.value)
            ).all()
            return [_version(r) for r in rows if (_utc(r.expires_at) or now) <= now]

    # --- folder bindings ---------------------------------------------------------
    def set_folder(self, collection_id: str, path: str | None) -> None:
        with self._session() as session:
            row = session.get(_FolderBinding, collection_id)
            if path is None:
                if row is not None:
                    session.delete(row)
            elif row is None:
                session.add(_FolderBinding(collection_id=collection_id, path=path))
            else:
                row.path = path

    def get_folder(self, collection_id: str) -> str | None:
        with self._session() as session:
            row = session.get(_FolderBinding, collection_id)
            return row.path if row else None

    def list_folder_files(self, collection_id: str) -> dict[str, FolderFileRecord]:
        with self._session() as session:
            rows = session.scalars(select(_FolderFile).where(_FolderFile.collection_id == collection_id)).all()
            return {
                r.relpath: FolderFileRecord(r.relpath, r.document_id, r.content_hash, bool(r.owned)) for r in rows
            }

    def put_folder_file(
        self, collection_id: str, relpath: str, document_id: str, content_hash: str, *, owned: bool = True
    ) -> None:
        with self._session() as session:
            row = session.get(_FolderFile, (collection_id, relpath))
            if row is None:
                session.add(
                    _FolderFile(
                        collection_id=collection_id,
                        relpath=relpath,
                        document_id=document_id,
                        content_hash=content_hash,
                        owned=owned,
                    )
                )
            else:
                row.document_id = document_id
                row.content_hash = content_hash
                row.owned = owned

    def delete_folder_file(self, collection_id: str, relpath: str) -> None:
        with self._session() as session:
            row = session.get(_FolderFile, (collection_id, relpath))
            if row is not None:
                session.delete(row)

    def count_folder_refs(self, document_id: str) -> int:
        with self._session() as session:
            return int(
                session.scalar(
                    select(func.count()).select_from(_FolderFile).where(_FolderFile.document_id == document_id)
                )
                or 0
            )

    def replace_document_content(
        self, document_id: str, *, content_hash: str, size_bytes: int, filename: str
    ) -> DocumentRecord | None:
        """New bytes for an existing document (a changed file): same id, queued again."""
        with self._session() as session:
            row = session.get(_Document, document_id)
            if row is None:
                return None
            row.content_hash = content_hash
            row.size_bytes = size_bytes
            row.filename = filename
            row.status = DocumentStatus.QUEUED.value
            row.error = None
            row.updated_at = _now()
            return _document(row)

    def set_chunk_counts(self, counts: dict[str, int]) -> None:
        """After a version switch: each document's chunk count in the new version."""
        with self._session() as session:
            for document_id, count in counts.items():
                row = session.get(_Document, document_id)
                if row is not None:
                    row.chunk_count = count

    # --- schedules -------------------------------------------------------------
    def create_schedule(
        self, collection_id: str, *, cron: str, timezone: str, kind: str, enabled: bool
    ) -> ScheduleRecord:
        now = _now()
        row = _Schedule(
            id=str(uuid.uuid4()),
            collection_id=collection_id,
            cron=cron,
            timezone=timezone,
            kind=kind,
            enabled=enabled,
            created_at=now,
            updated_at=now,
        )
        with self._session() as session:
            session.add(row)
        return _schedule(row)

    def get_schedule(self, collection_id: str, schedule_id: str) -> ScheduleRecord:
        with self._session() as session:
            row = session.get(_Schedule, schedule_id)
            if row is None or row.collection_id != collection_id:
                raise NotFoundError(f"schedule {schedule_id!r} not found")
            return _schedule(row)

    def list_schedules(self, collection_id: str | None = None) -> list[ScheduleRecord]:
        with self._session() as session:
            query = select(_Schedule)
            if collection_id is not None:
                query = query.where(_Schedule.collection_id == collection_id)
            rows = session.scalars(query.order_by(_Schedule.created_at, _Schedule.id)).all()
            return [_schedule(r) for r in rows]

    def update_schedule(self, collection_id: str, schedule_id: str, **fields: Any) -> ScheduleRecord:
        with self._session() as session:
            row = session.get(_Schedule, schedule_id)
            if row is None or row.collection_id != collection_id:
                raise NotFoundError(f"schedule {schedule_id!r} not found")
            for key in ("cron", "timezone", "kind", "enabled"):
                if fields.get(key) is not None:
                    setattr(row, key, fields[key])
            row.updated_at = _now()
            return _schedule(row)

    def delete_schedule(self, collection_id: str, schedule_id: str) -> None:
        with self._session() as session:
            row = session.get(_Schedule, schedule_id)
            if row is None or row.collection_id != collection_id:
                raise NotFoundError(f"schedule {schedule_id!r} not found")
            session.execute(delete(_ScheduleClaim).where(_ScheduleClaim.schedule_id == schedule_id))
            session.delete(row)

    def claim_slot(self, schedule_id: str, slot_at: datetime, claimed_by: str) -> bool:
        """True for exactly one caller per (schedule, slot), across processes:
        the insert of the primary key is the arbiter."""
        try:
            with self._session() as session:
                session.add(
                    _ScheduleClaim(
                        schedule_id=schedule_id,
                        slot_at=slot_at.astimezone(UTC),
                        claimed_by=claimed_by,
                        claimed_at=_now(),
                    )
                )
        except BackendError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                return False
            raise
        return True

    # --- runs ------------------------------------------------------------------
    def create_run(
        self,
        collection_id: str,
        *,
        kind: str,
        trigger: str,
        status: RunStatus = RunStatus.QUEUED,
        schedule_id: str | None = None,
        slot_at: datetime | None = None,
        error: str | None = None,
    ) -> RunRecord:
        now = _now()
        row = _Run(
            id=str(uuid.uuid4()),
            collection_id=collection_id,
            kind=kind,
            trigger=trigger,
            schedule_id=schedule_id,
            slot_at=slot_at.astimezone(UTC) if slot_at else None,
            status=status.value,
            added=0,
            updated=0,
            deleted=0,
            unchanged=0,
            failed=0,
            error=error,
            created_at=now,
            finished_at=now if status not in (RunStatus.QUEUED, RunStatus.RUNNING) else None,
        )
        with self._session() as session:
            session.add(row)
        return _run(row)

    def update_run(self, run_id: str, **fields: Any) -> RunRecord | None:
        unknown = set(fields) - _RUN_FIELDS
        if unknown:
            raise ValueError(f"unknown run fields: {sorted(unknown)}")
        with self._session() as session:
            row = session.get(_Run, run_id)
            if row is None:
                return None
            for key, value in fields.items():
                setattr(row, key, value.value if isinstance(value, RunStatus) else value)
            return _run(row)

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._session() as session:
            row = session.get(_Run, run_id)
            return _run(row) if row else None

    def list_runs(self, collection_id: str, limit: int = 100) -> list[RunRecord]:
        with self._session() as session:
            rows = session.scalars(
                select(_Run)
                .where(_Run.collection_id == collection_id)
                .order_by(_Run.created_at.desc(), _Run.id)
                .limit(limit)
            ).all()
            return [_run(r) for r in rows]

    def open_runs(self, collection_id: str | None = None) -> list[RunRecord]:
        with self._session() as session:
            query = select(_Run).where(_Run.status.in_(OPEN_RUN_STATUSES))
            if collection_id is not None:
                query = query.where(_Run.collection_id == collection_id)
            return [_run(r) for r in session.scalars(query.order_by(_Run.created_at)).all()]

    # --- the per-collection re-index lock ---------------------------------------
    def acquire_reindex_lock(self, collection_id: str, run_id: str, *, stale_after_s: float) -> bool:
        """Insert the collection's lock row; False if another run holds it. A row
        older than ``stale_after_s`` (its worker died) is taken over."""
        now = _now()
        with self._session() as session:
            row = session.get(_ReindexLock, collection_id)
            if row is not None and (_utc(row.acquired_at) or now) < now - timedelta(seconds=stale_after_s):
                session.delete(row)
        try:
            with self._session() as session:
                session.add(_ReindexLock(collection_id=collection_id, run_id=run_id, acquired_at=now))
        except BackendError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                return False
            raise
        return True

    def release_reindex_lock(self, collection_id: str, run_id: str) -> None:
        with self._session() as session:
            session.execute(
                delete(_ReindexLock).where(
                    _ReindexLock.collection_id == collection_id, _ReindexLock.run_id == run_id
                )
            )

    def reindex_lock_holder(self, collection_id: str) -> str | None:
        with self._session() as session:
            row = session.get(_ReindexLock, collection_id)
            return row.run_id if row else None

    def clear_reindex_locks(self) -> None:
        """Embedded start-up only: the one worker is this process, so any lock
        or running run was cut off by a crash."""
        with self._session() as session:
            session.execute(delete(_ReindexLock))
            for row in session.scalars(select(_Run).where(_Run.status == RunStatus.RUNNING.value)).all():
                row.status = RunStatus.FAILED.value
                row.error = "interrupted by a restart of the service"
                row.finished_at = _now()
            for version in session.scalars(
                select(_IndexVersion).where(_IndexVersion.status == VersionStatus.BUILDING.value)
            ).all():
                version.status = VersionStatus.FAILED.value

    # --- golden questions --------------------------------------------------------
    def replace_golden(self, collection_id: str, items: list[GoldenRecord]) -> int:
        with self._session() as session:
            session.execute(delete(_Golden).where(_Golden.collection_id == collection_id))
            for i, item in enumerate(items):
                session.add(
                    _Golden(
                        collection_id=collection_id,
                        position=i,
                        question=item.question,
                        answers=json.dumps(item.answers),
                        document=item.document,
                    )
                )
        return len(items)

    def list_golden(self, collection_id: str) -> list[GoldenRecord]:
        with self._session() as session:
            rows = session.scalars(
                select(_Golden).where(_Golden.collection_id == collection_id).order_by(_Golden.position)
            ).all()
            return [GoldenRecord(r.question, list(json.loads(r.answers)), r.document) for r in rows]


def _version(row: _IndexVersion) -> VersionRecord:
    return VersionRecord(
        collection_id=row.collection_id,
        version=row.version,
        status=VersionStatus(row.status),
        embedding_model=row.embedding_model,
        dimension=row.dimension,
        chunking=row.chunking,
        created_at=_utc(row.created_at) or _now(),
        activated_at=_utc(row.activated_at),
        expires_at=_utc(row.expires_at),
    )


def _schedule(row: _Schedule) -> ScheduleRecord:
    return ScheduleRecord(
        id=row.id,
        collection_id=row.collection_id,
        cron=row.cron,
        timezone=row.timezone,
        kind=row.kind,
        enabled=bool(row.enabled),
        created_at=_utc(row.created_at) or _now(),
        updated_at=_utc(row.updated_at) or _now(),
    )


def _run(row: _Run) -> RunRecord:
    return RunRecord(
        id=row.id,
        collection_id=row.collection_id,
        kind=row.kind,
        trigger=row.trigger,
        schedule_id=row.schedule_id,
        slot_at=_utc(row.slot_at),
        status=RunStatus(row.status),
        added=row.added,
        updated=row.updated,
        deleted=row.deleted,
        unchanged=row.unchanged,
        failed=row.failed,
        from_version=row.from_version,
        to_version=row.to_version,
        score_current=row.score_current,
        score_candidate=row.score_candidate,
        error=row.error,
        created_at=_utc(row.created_at) or _now(),
        started_at=_utc(row.started_at),
        finished_at=_utc(row.finished_at),
    )


_RUN_FIELDS = frozenset(
    {
        "status", "added", "updated", "deleted", "unchanged", "failed", "from_version", "to_version",
        "score_current", "score_candidate", "error", "started_at", "finished_at",
    }
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
