"""Request and response bodies of the HTTP API.

Why one module of about 450 lines: about 25 small pydantic models, each a few
fields with their descriptions (the OpenAPI schema), most of them mapping one
record type; they share the filter and source shapes. ``openai_schemas.py``
holds the OpenAI-compatible ones.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rag.answering import Answer
from rag.intake import UploadResult
from rag.options import AskOptions, SearchOptions
from rag.quality import GoldenQuestion
from rag.registry import CollectionRecord, DocumentRecord, RunRecord, ScheduleRecord, VersionRecord
from rag.retrieval import MAX_QUERY_CHARS, SearchHit
from rag.schedules import next_slot
from rag.service import CollectionInfo
from rag.store import MetadataValue, SearchFilter

__all__ = [
    "AskRequest",
    "AskResponse",
    "CollectionCreate",
    "CollectionPublic",
    "DocumentPublic",
    "EvaluationItem",
    "EvaluationRequest",
    "EvidencePublic",
    "FilterSpec",
    "FolderBinding",
    "FolderPublic",
    "GoldenPublic",
    "GoldenUploaded",
    "GroundingPublic",
    "ReindexRequest",
    "RunPublic",
    "ScheduleCreate",
    "SchedulePublic",
    "ScheduleUpdate",
    "SearchRequest",
    "SearchResponse",
    "SourcePublic",
    "UploadItem",
    "UploadResponse",
    "VersionPublic",
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
    metadata: dict[str, Any] = {}
    original_filename: str | None = Field(
        default=None,
        description="The name as uploaded, escaped, when control or format characters or its length "
        "made the stored name differ.",
    )

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
            metadata=d.metadata,
            original_filename=d.original_filename,
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


SearchModeName = Literal["hybrid", "dense", "lexical"]


class FilterSpec(_Strict):
    """Every given part must hold; lists mean any of."""

    document_ids: list[str] | None = Field(default=None, max_length=1000)
    filenames: list[str] | None = Field(default=None, max_length=1000)
    uploaded_after: datetime | None = None
    uploaded_before: datetime | None = None
    metadata: dict[str, MetadataValue | list[MetadataValue]] | None = Field(
        default=None, description="Upload metadata key -> value (or list of values, any of which matches)."
    )

    def to_filter(self) -> SearchFilter:
        return SearchFilter(
            document_ids=self.document_ids,
            filenames=self.filenames,
            uploaded_after=self.uploaded_after,
            uploaded_before=self.uploaded_before,
            metadata=self.metadata,
        )


class SearchRequest(_Strict):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    top_k: int | None = Field(default=None, ge=1, le=100, description="Default: RAG_TOP_K.")
    mode: SearchModeName | None = Field(default=None, description="Default: the service's (hybrid).")
    filter: FilterSpec | None = None
    rerank: bool | None = Field(default=None, description="Default: re-rank when a re-ranker is configured.")

    def options(self) -> SearchOptions:
        return _search_options(self.top_k, self.mode, self.filter, self.rerank)


def _search_options(
    top_k: int | None, mode: SearchModeName | None, spec: FilterSpec | None, rerank: bool | None
) -> SearchOptions:
    return SearchOptions(top_k=top_k, mode=mode, where=spec.to_filter() if spec else None, rerank=rerank)


class SourcePublic(BaseModel):
    rank: int
    document_id: str
    filename: str
    page: int | None
    section: str | None
    chunk_index: int
    text: str
    score: float
    similarity: float | None = None
    metadata: dict[str, Any] = {}

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
            similarity=h.similarity,
            metadata=h.metadata,
        )


class EvidencePublic(BaseModel):
    """A quoted span of a source: ``quote == sources[rank - 1].text[start:end]``."""

    rank: int = Field(description="Rank of the source passage the quote comes from.")
    start: int = Field(description="Character offset of the quote in that passage's text.")
    end: int
    quote: str


class GroundingPublic(BaseModel):
    """What an answer from the passages rests on (extension fields, also in the
    OpenAI-compatible responses)."""

    grounded: bool = Field(description="False when the service abstains (see reason).")
    reason: str | None = Field(default=None, description="Why it abstained.")
    supported: bool = Field(
        default=False, description="The answer's content words stand in one quoted sentence of a cited passage."
    )
    evidence: list[EvidencePublic] = []
    unanswerable_probability: float | None = Field(
        default=None, description="The abstention model's estimate; it abstains at RAG_ABSTAIN_THRESHOLD or more."
    )
    draft: str | None = Field(default=None, description="The generated answer that was withheld.")
    prompt_style: str | None = Field(default=None, description="gemma-chat or completion.")

    @classmethod
    def fields_of(cls, a: Answer) -> dict[str, Any]:
        g = a.grounding
        return cls(
            grounded=a.grounded,
            reason=a.reason,
            supported=bool(g and g.supported and a.grounded),
            evidence=[EvidencePublic(rank=e.rank, start=e.start, end=e.end, quote=e.text) for e in g.evidence]
            if g
            else [],
            unanswerable_probability=round(g.unanswerable_probability, 4)
            if g and g.unanswerable_probability is not None
            else None,
            draft=a.draft,
            prompt_style=a.prompt_style,
        ).model_dump(mode="json")


class SearchResponse(BaseModel):
    results: list[SourcePublic]
    timings: dict[str, float] = {}


class AskRequest(_Strict):
    question: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    top_k: int | None = Field(default=None, ge=1, le=50)
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    mode: SearchModeName | None = None
    filter: FilterSpec | None = None
    rerank: bool | None = None
    stream: bool = Field(
        default=False,
        description="Answer as Server-Sent Events: `sources`, then `delta` events, then `done`.",
    )
    ignore_eos: bool = Field(default=False, description="Generate `max_tokens` tokens (benchmarks).")

    def options(self) -> AskOptions:
        return AskOptions(
            search=_search_options(self.top_k, self.mode, self.filter, self.rerank),
            max_tokens=self.max_tokens,
            ignore_eos=self.stream and self.ignore_eos,  # a plain answer always stops at the end of text
        )


class AskResponse(GroundingPublic):
    answer: str
    sources: list[SourcePublic]
    usage: dict[str, int]
    timings: dict[str, float]
    finish_reason: str = "stop"

    @classmethod
    def of(cls, a: Answer) -> AskResponse:
        return cls(
            answer=a.answer,
            sources=[SourcePublic.of(s) for s in a.sources],
            usage=a.usage,
            timings={k: round(v, 4) for k, v in a.timings.items()},
            finish_reason=a.finish_reason,
            **GroundingPublic.fields_of(a),
        )


class EvaluationItem(_Strict):
    question: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    answers: list[str] = Field(default_factory=list, description="Empty: unanswerable.")
    document: str | None = Field(default=None, description="File name (or document id) holding the answer.")
    id: str | None = None


class EvaluationRequest(_Strict):
    items: list[EvaluationItem] = Field(min_length=1, max_length=20000)
    mode: SearchModeName | None = None
    k: list[int] = Field(default=[1, 5, 10], min_length=1, max_length=10)
    generate_sample: int = Field(
        default=5, ge=0, le=1000, description="Answerable questions to generate answers for (EM/F1); 0: none."
    )
    generate_unanswerable: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Unanswerable questions to generate answers for (abstention after generation); 0: none.",
    )
    latency_sample: int = Field(default=100, ge=0, le=10000, description="Questions timed one search at a time.")
    seed: int = 0
    rerank: bool | None = None
# --- re-indexing -------------------------------------------------------------


class FolderBinding(_Strict):
    folder: str = Field(min_length=1, max_length=4096, examples=["/srv/docs/handbook"])


class FolderPublic(BaseModel):
    folder: str | None


class ScheduleCreate(_Strict):
    cron: str = Field(min_length=1, max_length=255, examples=["0 3 * * *"])
    timezone: str = Field(default="UTC", max_length=64, examples=["Europe/Paris"])
    kind: Literal["sync", "full"]
    enabled: bool = True


class ScheduleUpdate(_Strict):
    cron: str | None = Field(default=None, min_length=1, max_length=255)
    timezone: str | None = Field(default=None, max_length=64)
    kind: Literal["sync", "full"] | None = None
    enabled: bool | None = None


class SchedulePublic(BaseModel):
    id: str
    cron: str
    timezone: str
    kind: str
    enabled: bool
    next_run_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, s: ScheduleRecord) -> SchedulePublic:
        return cls(
            id=s.id,
            cron=s.cron,
            timezone=s.timezone,
            kind=s.kind,
            enabled=s.enabled,
            next_run_at=next_slot(s.cron, s.timezone, datetime.now(UTC)) if s.enabled else None,
            created_at=s.created_at,
            updated_at=s.updated_at,
        )


class ReindexRequest(_Strict):
    kind: Literal["sync", "full"] = "full"


class RunPublic(BaseModel):
    id: str
    kind: str
    trigger: str
    schedule_id: str | None
    slot_at: datetime | None
    status: str
    counts: dict[str, int]
    from_version: int | None
    to_version: int | None
    scores: dict[str, float | None]
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None

    @classmethod
    def of(cls, r: RunRecord) -> RunPublic:
        duration = (r.finished_at - r.started_at).total_seconds() if r.finished_at and r.started_at else None
        return cls(
            id=r.id,
            kind=r.kind,
            trigger=r.trigger,
            schedule_id=r.schedule_id,
            slot_at=r.slot_at,
            status=r.status.value,
            counts={
                "added": r.added,
                "updated": r.updated,
                "deleted": r.deleted,
                "unchanged": r.unchanged,
                "failed": r.failed,
            },
            from_version=r.from_version,
            to_version=r.to_version,
            scores={"current": r.score_current, "candidate": r.score_candidate},
            error=r.error,
            created_at=r.created_at,
            started_at=r.started_at,
            finished_at=r.finished_at,
            duration_s=duration,
        )


class VersionPublic(BaseModel):
    version: int
    status: str
    embedding_model: str
    dimension: int
    chunking: str | None
    created_at: datetime
    activated_at: datetime | None
    expires_at: datetime | None

    @classmethod
    def of(cls, v: VersionRecord) -> VersionPublic:
        return cls(
            version=v.version,
            status=v.status.value,
            embedding_model=v.embedding_model,
            dimension=v.dimension,
            chunking=v.chunking,
            created_at=v.created_at,
            activated_at=v.activated_at,
            expires_at=v.expires_at,
        )


class GoldenPublic(BaseModel):
    question: str
    answers: list[str]
    document: str

    @classmethod
    def of(cls, g: GoldenQuestion) -> GoldenPublic:
        return cls(question=g.question, answers=g.answers, document=g.document)


class GoldenUploaded(BaseModel):
    questions: int
