"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from rag.registry import CollectionRecord, DocumentRecord
from rag.service import Answer, CollectionInfo, SearchHit, UploadResult

__all__ = [
    "AskRequest",
    "AskResponse",
    "CollectionCreate",
    "CollectionPublic",
    "DocumentPublic",
    "SearchRequest",
    "SearchResponse",
    "SourcePublic",
    "UploadItem",
    "UploadResponse",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CollectionCreate(_Strict):
    name: str = Field(min_length=1, max_length=64, examples=["handbook"])


class CollectionPublic(BaseModel):
    id: str
    name: str
    created_at: datetime
    documents: int | None = None
    chunks: int | None = None
    points: int | None = None
    status_counts: dict[str, int] | None = None

    @classmethod
    def of(cls, record: CollectionRecord) -> CollectionPublic:
        return cls(id=record.id, name=record.name, created_at=record.created_at)

    @classmethod
    def of_info(cls, info: CollectionInfo) -> CollectionPublic:
        return cls(
            id=info.collection.id,
            name=info.collection.name,
            created_at=info.collection.created_at,
            documents=info.documents,
            chunks=info.chunks,
            points=info.points,
            status_counts=info.by_status,
        )


class DocumentPublic(BaseModel):
    id: str
    filename: str
    status: str
    error: str | None
    chunk_count: int
    size_bytes: int
    content_type: str | None
    sha256: str
    created_at: datetime
    updated_at: datetime
    indexed_at: datetime | None

    @classmethod
    def of(cls, d: DocumentRecord) -> DocumentPublic:
        return cls(
            id=d.id,
            filename=d.filename,
            status=d.status.value,
            error=d.error,
            chunk_count=d.chunk_count,
            size_bytes=d.size_bytes,
            content_type=d.content_type,
            sha256=d.content_hash,
            created_at=d.created_at,
            updated_at=d.updated_at,
            indexed_at=d.indexed_at,
        )


class UploadItem(BaseModel):
    filename: str
    id: str | None = None
    status: str  # the document's status, or "rejected"
    duplicate: bool = False
    error: dict[str, str] | None = None

    @classmethod
    def of(cls, r: UploadResult) -> UploadItem:
        if r.error is not None or r.document is None:
            code = r.error.code if r.error else "invalid_request"
            message = r.error.message if r.error else "rejected"
            return cls(filename=r.filename, status="rejected", error={"code": code, "message": message})
        return cls(
            filename=r.filename, id=r.document.id, status=r.document.status.value, duplicate=r.duplicate
        )


class UploadResponse(BaseModel):
    documents: list[UploadItem]


class SearchRequest(_Strict):
    query: str = Field(min_length=1, max_length=4000)
    top_k: int = Field(default=5, ge=1, le=100)


class SourcePublic(BaseModel):
    rank: int
    document_id: str
    filename: str
    page: int | None
    section: str | None
    chunk_index: int
    text: str
    score: float

    @classmethod
    def of(cls, h: SearchHit) -> SourcePublic:
        return cls(
            rank=h.rank,
            document_id=h.document_id,
            filename=h.filename,
            page=h.page,
            section=h.section,
            chunk_index=h.chunk_index,
            text=h.text,
            score=h.score,
        )


class SearchResponse(BaseModel):
    results: list[SourcePublic]


class AskRequest(_Strict):
    question: str = Field(min_length=1, max_length=4000)
    top_k: int | None = Field(default=None, ge=1, le=50)
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    stream: bool = Field(
        default=False,
        description="Answer as Server-Sent Events: `sources`, then `delta` events, then `done`.",
    )


class AskResponse(BaseModel):
    answer: str
    grounded: bool
    sources: list[SourcePublic]
    usage: dict[str, int]
    timings: dict[str, float]
    finish_reason: str = "stop"

    @classmethod
    def of(cls, a: Answer) -> AskResponse:
        return cls(
            answer=a.answer,
            grounded=a.grounded,
            sources=[SourcePublic.of(s) for s in a.sources],
            usage=a.usage,
            timings={k: round(v, 4) for k, v in a.timings.items()},
            finish_reason=a.finish_reason,
        )
