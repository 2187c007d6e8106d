"""What the store holds and is asked, independent of the engine behind it.

Point IDs are derived from (collection, document, chunk index), so re-indexing a
document overwrites its points instead of duplicating them. Each point carries
two named vectors: ``dense`` (the embedding, cosine) and ``lexical`` (BM25 term
weights from ``rag.lexical``, with Qdrant's IDF modifier).

Filters are plain data here (``Condition``); each backend translates them to
its engine's filter objects, so both engines are asked exactly the same thing.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from rag.lexical import SparseTerms

__all__ = [
    "DENSE",
    "INDEXED_FIELDS",
    "LEXICAL",
    "AnyOf",
    "ChunkPoint",
    "CollectionOptions",
    "Condition",
    "DateRange",
    "Hit",
    "Layout",
    "Match",
    "MetadataValue",
    "NumberRange",
    "PayloadSchema",
    "PointRecord",
    "QuerySpec",
    "ScoredChunk",
    "SearchFilter",
    "hit_of",
    "point_id",
    "record_of",
    "schema_of",
]

# Fixed namespace: IDs must be stable across processes and releases.
_POINT_NAMESPACE = uuid.UUID("6f1d3c52-8a4e-4f0e-9a57-3f8f2b1c9d10")


_NAMESPACE_BYTES = _POINT_NAMESPACE.bytes


def point_id(collection_id: str, document_id: str, chunk_index: int) -> str:
    """Deterministic Qdrant point ID of one chunk: ``uuid5(namespace, "c/d/i")``,
    spelled out with hashlib (``uuid.uuid5`` costs a tenth of an upsert)."""
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + f"{collection_id}/{document_id}/{chunk_index}".encode()).digest()
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


DENSE = "dense"
LEXICAL = "lexical"

PayloadSchema = Literal["keyword", "integer", "float", "bool", "datetime"]

# Payload fields with an index: the ones search filters on.
INDEXED_FIELDS: dict[str, PayloadSchema] = {
    "document_id": "keyword",
    "filename": "keyword",
    "chunk_index": "integer",
    "uploaded_at": "datetime",
}

MetadataValue = str | int | float | bool


def schema_of(value: Any) -> PayloadSchema:
    """Index type of a metadata value (a list is typed by its first item)."""
    if isinstance(value, list):
        value = value[0] if value else ""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    return "keyword"


@dataclass(frozen=True)
class ChunkPoint:
    document_id: str
    chunk_index: int
    text: str
    vector: Sequence[float]
    filename: str
    page: int | None = None
    section: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    lexical: SparseTerms | None = None
    uploaded_at: datetime | None = None
    metadata: dict[str, MetadataValue | list[MetadataValue]] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoredChunk:
    document_id: str
    chunk_index: int
    text: str
    score: float
    filename: str
    page: int | None
    section: str | None
    similarity: float | None = None  # cosine to the query vector, when one was given
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchFilter:
    """Restrictions on the chunks a search may return; every given part must hold.

    Lists mean any of; ``metadata`` maps a key of the upload metadata to a value
    (or a list of values, any of which matches).
    """

    document_ids: list[str] | None = None
    filenames: list[str] | None = None
    uploaded_after: datetime | None = None
    uploaded_before: datetime | None = None
    metadata: dict[str, MetadataValue | list[MetadataValue]] | None = None

    def __bool__(self) -> bool:
        return bool(
            self.document_ids is not None
            or self.filenames is not None
            or self.uploaded_after
            or self.uploaded_before
            or self.metadata
        )

    def conditions(self) -> list[Condition]:
        """The filter as engine-neutral conditions, all of which must hold."""
        must: list[Condition] = []
        if self.document_ids is not None:
            must.append(Match("document_id", tuple(self.document_ids)))
        if self.filenames is not None:
            must.append(Match("filename", tuple(self.filenames)))
        if self.uploaded_after or self.uploaded_before:
            must.append(DateRange("uploaded_at", self.uploaded_after, self.uploaded_before))
        for key, value in (self.metadata or {}).items():
            values = value if isinstance(value, list) else [value]
            options = [_metadata_condition(f"metadata.{key}", v) for v in values]
            must.append(options[0] if len(options) == 1 else AnyOf(tuple(options)))
        return must


# --- engine-neutral filter conditions -------------------------------------------
@dataclass(frozen=True)
class Match:
    """The field equals one of ``values`` (strings, integers or booleans)."""

    key: str
    values: tuple[str | int | bool, ...]


@dataclass(frozen=True)
class NumberRange:
    key: str
    gte: float | None = None
    lte: float | None = None


@dataclass(frozen=True)
class DateRange:
    key: str
    gte: datetime | None = None
    lte: datetime | None = None


@dataclass(frozen=True)
class AnyOf:
    """At least one of the conditions holds."""

    options: tuple[Condition, ...]


Condition = Match | NumberRange | DateRange | AnyOf


def _metadata_condition(path: str, value: MetadataValue) -> Condition:
    if isinstance(value, float):  # match takes strings, integers and booleans only
        return NumberRange(path, gte=value, lte=value)
    return Match(path, (value,))


# --- what backends store and return -----------------------------------------------
@dataclass(frozen=True)
class PointRecord:
    """One point as the engine stores it. ``vectors`` maps a dense vector's name
    to its values; ``sparse`` a sparse vector's name to (indices, values)."""

    id: str
    vectors: dict[str, list[float]]
    sparse: dict[str, tuple[list[int], list[float]]]
    payload: dict[str, Any]


@dataclass(frozen=True)
class QuerySpec:
    """One query: dense alone, lexical alone, or both fused by reciprocal rank
    (each side prefetching ``pool`` candidates)."""

    limit: int
    dense: list[float] | None = None
    lexical: SparseTerms | None = None
    pool: int = 0
    where: tuple[Condition, ...] = ()
    exact: bool = False
    with_dense: bool = False
    hnsw_ef: int | None = None


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]
    dense: list[float] | None = None


@dataclass
class Layout:
    """What a physical collection was created with: dense vector sizes by name,
    payload fields with an index."""

    dense: dict[str, int]
    indexed: set[str] = field(default_factory=set)


def _named_vectors(vector: Any) -> dict[str, Any]:
    if isinstance(vector, dict):
        return vector
    return {} if vector is None else {"": vector}  # an unnamed vector (old layouts)


def hit_of(point: Any) -> Hit:
    """A scored point as either engine returns it (``id``, ``score``, ``payload``,
    ``vector``: both clients spell them alike)."""
    dense = _named_vectors(point.vector).get(DENSE)
    return Hit(id=str(point.id), score=float(point.score), payload=point.payload or {}, dense=dense)


def record_of(point: Any) -> PointRecord:
    """A stored point as either engine reads it back, vectors split into dense
    and sparse (``indices`` + ``values``)."""
    vectors: dict[str, list[float]] = {}
    sparse: dict[str, tuple[list[int], list[float]]] = {}
    for key, value in _named_vectors(point.vector).items():
        if hasattr(value, "indices"):
            sparse[key] = (list(value.indices), list(value.values))
        elif value is not None:
            vectors[key] = list(value)
    return PointRecord(id=str(point.id), vectors=vectors, sparse=sparse, payload=point.payload or {})


@dataclass(frozen=True)
class CollectionOptions:
    """How a Qdrant *server* lays out a new collection (scale-out); the embedded
    engine has one shard and ignores the distribution settings."""

    shard_number: int = 1
    replication_factor: int = 1
    write_consistency_factor: int = 1
    on_disk_vectors: bool = False
    int8_quantization: bool = False
    hnsw_ef: int = 128
