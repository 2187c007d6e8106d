"""The registry of collections, documents and jobs (SQLAlchemy).

SQLite in the data directory by default, PostgreSQL (or any SQLAlchemy URL) by
setting. This module is the only one that talks SQL; it returns plain frozen
records so callers never hold sessions or ORM objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from rag.errors import AlreadyExistsError, BackendError, NotFoundError

__all__ = [
    "CollectionRecord",
    "DocumentRecord",
    "DocumentStatus",
    "JobRecord",
    "Registry",
]


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
            _Base.metadata.create_all(self._engine)
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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
