"""Documents of a collection: one row per distinct content (sha256) per collection."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select

from rag.errors import NotFoundError
from rag.registry._sql import Repository, insert_if_absent
from rag.registry.records import DocumentRecord, DocumentStatus, utc, utcnow
from rag.registry.tables import DocumentRow

__all__ = ["DocumentRepository"]


def _record(row: DocumentRow) -> DocumentRecord:
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
        created_at=utc(row.created_at) or utcnow(),
        updated_at=utc(row.updated_at) or utcnow(),
        indexed_at=utc(row.indexed_at),
        metadata=dict(row.doc_metadata or {}),
        original_filename=row.original_filename,
    )


class DocumentRepository(Repository):
    def add(
        self,
        *,
        collection_id: str,
        filename: str,
        content_hash: str,
        size_bytes: int,
        content_type: str | None,
        metadata: dict[str, Any] | None = None,
        original_filename: str | None = None,
    ) -> tuple[DocumentRecord, bool]:
        """Register a document; returns (record, created). Identical content in the
        same collection (already there, or inserted by a racing upload) returns
        the existing record and ``created=False``."""
        now = utcnow()
        values: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "collection_id": collection_id,
            "filename": filename,
            "content_hash": content_hash,
            "size_bytes": size_bytes,
            "content_type": content_type,
            "status": DocumentStatus.QUEUED.value,
            "error": None,
            "chunk_count": 0,
            "created_at": now,
            "updated_at": now,
            "indexed_at": None,
            "metadata": metadata or {},
            "original_filename": original_filename,
        }
        created = insert_if_absent(self._s, DocumentRow, values, key=["collection_id", "content_hash"])
        record = self.find_by_hash(collection_id, content_hash)
        if record is None:  # pragma: no cover - the row was just inserted or found
            raise NotFoundError(f"document with hash {content_hash} vanished while being added")
        return record, created

    def find_by_hash(self, collection_id: str, content_hash: str) -> DocumentRecord | None:
        row = self._s.scalars(
            select(DocumentRow).where(
                DocumentRow.collection_id == collection_id, DocumentRow.content_hash == content_hash
            )
        ).first()
        return _record(row) if row else None

    def get(self, collection_id: str, document_id: str) -> DocumentRecord:
        row = self._s.get(DocumentRow, document_id)
        if row is None or row.collection_id != collection_id:
            raise NotFoundError(f"document {document_id!r} not found")
        return _record(row)

    def get_by_id(self, document_id: str) -> DocumentRecord | None:
        row = self._s.get(DocumentRow, document_id)
        return _record(row) if row else None

    def list_for(self, collection_id: str) -> list[DocumentRecord]:
        rows = self._s.scalars(
            select(DocumentRow)
            .where(DocumentRow.collection_id == collection_id)
            .order_by(DocumentRow.created_at, DocumentRow.id)
        ).all()
        return [_record(r) for r in rows]

    def set_status(
        self, document_id: str, status: DocumentStatus, *, error: str | None = None, chunk_count: int | None = None
    ) -> DocumentRecord | None:
        row = self._s.get(DocumentRow, document_id)
        if row is None:
            return None
        now = utcnow()
        row.status = status.value
        row.error = error
        row.updated_at = now
        if chunk_count is not None:
            row.chunk_count = chunk_count
        if status is DocumentStatus.INDEXED:
            row.indexed_at = now
        return _record(row)

    def replace_content(
        self, document_id: str, *, content_hash: str, size_bytes: int, filename: str
    ) -> DocumentRecord | None:
        """New bytes for an existing document (a changed file): same id, queued again."""
        row = self._s.get(DocumentRow, document_id)
        if row is None:
            return None
        row.content_hash = content_hash
        row.size_bytes = size_bytes
        row.filename = filename
        row.status = DocumentStatus.QUEUED.value
        row.error = None
        row.updated_at = utcnow()
        return _record(row)

    def set_chunk_counts(self, counts: dict[str, int]) -> None:
        for document_id, count in counts.items():
            row = self._s.get(DocumentRow, document_id)
            if row is not None:
                row.chunk_count = count

    def delete(self, document_id: str) -> None:
        self._s.execute(delete(DocumentRow).where(DocumentRow.id == document_id))

    def count_with_hash(self, content_hash: str) -> int:
        """Documents of any collection with these bytes (the blob store keeps one copy)."""
        query = select(func.count()).select_from(DocumentRow).where(DocumentRow.content_hash == content_hash)
        return int(self._s.scalar(query) or 0)
