"""What the registry hands out: plain frozen records and their status enums.

Callers never hold sessions or ORM rows; every repository converts its rows to
these before the transaction ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "OPEN_RUN_STATUSES",
    "ApiKeyRecord",
    "CollectionRecord",
    "DocumentRecord",
    "DocumentStatus",
    "FolderFileRecord",
    "GoldenRecord",
    "RunRecord",
    "RunStatus",
    "RunUpdate",
    "ScheduleRecord",
    "ScheduleUpdate",
    "VersionRecord",
    "VersionStatus",
    "utc",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def utc(value: datetime | None) -> datetime | None:
    """SQLite drops the zone; every stored value is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class DocumentStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    INDEXED = "indexed"
    FAILED = "failed"


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
    original_filename: str | None = None  # escaped; only when ``filename`` had to differ from it


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
class ScheduleUpdate:
    """The fields of a schedule to change; None leaves a field as it is."""

    cron: str | None = None
    timezone: str | None = None
    kind: str | None = None
    enabled: bool | None = None


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
class RunUpdate:
    """The fields of a run to change; None leaves a field as it is (no run
    field ever goes back to empty once set)."""

    status: RunStatus | None = None
    added: int | None = None
    updated: int | None = None
    deleted: int | None = None
    unchanged: int | None = None
    failed: int | None = None
    from_version: int | None = None
    to_version: int | None = None
    score_current: float | None = None
    score_candidate: float | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class GoldenRecord:
    question: str
    answers: list[str]
    document: str


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    name: str
    prefix: str  # the key's first characters, to tell keys apart in a listing
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None
