"""Vector store adapter: the only module that talks to Qdrant.

Qdrant local mode (an on-disk store in the data directory, one process at a time)
by default; a Qdrant server when a URL is set. Both go through the same
``QdrantClient`` API, so every method here works the same on either.

Point IDs are derived from (collection, document, chunk index), so re-indexing a
document overwrites its points instead of duplicating them.

Each point carries two named vectors: ``dense`` (the embedding, cosine) and
``lexical`` (BM25 term weights from ``rag.lexical``, with Qdrant's IDF modifier).
A hybrid search runs both as prefetches and fuses their rankings in Qdrant with
reciprocal-rank fusion, in one query.
Versions: a RAG collection is served through a Qdrant *alias* (``rag_<id>``) that
points at one physical collection ``rag_<id>_v<n>``. Every method taking a
``collection_id`` works on the alias; ``at_version`` returns a view of the store
pinned to one physical version (a full re-index writes its new version through
it), and ``point_alias`` moves the alias in one atomic Qdrant call.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rag.errors import BackendError, ConfigurationError
from rag.lexical import SparseTerms

__all__ = [
    "DENSE",
    "LEXICAL",
    "ChunkPoint",
    "MetadataValue",
    "ScoredChunk",
    "SearchFilter",
    "VectorStore",
    "point_id",
]

log = logging.getLogger(__name__)

# Fixed namespace: IDs must be stable across processes and releases.
_POINT_NAMESPACE = uuid.UUID("6f1d3c52-8a4e-4f0e-9a57-3f8f2b1c9d10")


def point_id(collection_id: str, document_id: str, chunk_index: int) -> str:
    """Deterministic Qdrant point ID of one chunk."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{collection_id}/{document_id}/{chunk_index}"))


DENSE = "dense"
LEXICAL = "lexical"

# Payload fields with an index: the ones search filters on.
_INDEXED_FIELDS = {
    "document_id": "keyword",
    "filename": "keyword",
    "chunk_index": "integer",
    "uploaded_at": "datetime",
}

MetadataValue = str | int | float | bool


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


class VectorStore:
    """One Qdrant collection per RAG collection, named by the collection's id."""

    def __init__(
        self,
        *,
        path: Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
        prefix: str = "rag_",
    ) -> None:
        from qdrant_client import QdrantClient

        self._prefix = prefix
        try:
            if url:
                self._client = QdrantClient(url=url, api_key=api_key, timeout=30)
            elif path is not None:
                path.mkdir(parents=True, exist_ok=True)
                self._client = QdrantClient(path=str(path))
            else:
                self._client = QdrantClient(location=":memory:")
        except Exception as exc:  # portalocker, IO, connection errors differ by mode
            where = url or str(path)
            raise BackendError(
                f"cannot open the Qdrant store at {where}: {exc}. A local store can "
                "be opened by one process only; use a Qdrant server (RAG_QDRANT_URL) "
                "to share it."
            ) from exc
        # Local mode is a Python object guarded by no lock of its own.
        self._lock = threading.RLock() if not url else _NullLock()
        self._indexed: dict[str, set[str]] = {}  # Qdrant collection -> indexed payload fields
        self._pinned: dict[str, str] = {}  # collection id -> physical name, in views

    def _name(self, collection_id: str) -> str:
        pinned = self._pinned.get(collection_id)
        if pinned is not None:
            return pinned
        return f"{self._prefix}{collection_id.replace('-', '')}"

    def close(self) -> None:
        with self._lock:
            self._client.close()

    def ping(self) -> None:
        with self._lock:
            self._call(self._client.get_collections)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"Qdrant error: {exc}") from exc

    def ensure_collection(self, collection_id: str, vector_size: int) -> None:
        """The collection's alias exists: if not, version 1 is created behind it."""
        name = self._name(collection_id)
        with self._lock:
            if self._call(self._client.collection_exists, name):
                info = self._call(self._client.get_collection, name)
                vectors = info.config.params.vectors
                if not isinstance(vectors, dict) or DENSE not in vectors:
                    raise ConfigurationError(
                        f"the Qdrant collection {name} was made by an earlier version (one unnamed "
                        "vector, no lexical vectors); delete the RAG collection and ingest again"
                    )
                self._indexed[name] = set((info.payload_schema or {}).keys())
                return
            if collection_id in self._pinned:
                self._create_physical(name, vector_size)
                return
            self.create_version(collection_id, 1, vector_size)
            self.point_alias(collection_id, 1)

    def _create_physical(self, name: str, vector_size: int) -> None:
        from qdrant_client import models

        with self._lock:
            self._call(
                self._client.create_collection,
                name,
                vectors_config={
                    DENSE: models.VectorParams(size=vector_size, distance=models.Distance.COSINE)
                },
                sparse_vectors_config={LEXICAL: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            )
            for field_name, schema in _INDEXED_FIELDS.items():
                self._index_field(name, field_name, schema)
            self._indexed[name] = set(_INDEXED_FIELDS)

    def _index_field(self, name: str, field_name: str, schema: str) -> None:
        from qdrant_client import models

        with warnings.catch_warnings():  # local mode: "payload indexes have no effect"
            warnings.simplefilter("ignore", UserWarning)
            self._call(
                self._client.create_payload_index,
                name,
                field_name=field_name,
                field_schema=models.PayloadSchemaType(schema),
            )

    def _ensure_metadata_indexes(self, name: str, points: Sequence[ChunkPoint]) -> None:
        """Index each metadata key the first time it is seen, typed by its value."""
        known = self._indexed.get(name)
        if known is None:
            info = self._call(self._client.get_collection, name)
            known = set((info.payload_schema or {}).keys())
            self._indexed[name] = known
        for p in points:
            for key, value in p.metadata.items():
                path = f"metadata.{key}"
                if path in known:
                    continue
                sample = value[0] if isinstance(value, list) and value else value
                self._index_field(name, path, _schema_of(sample))
                known.add(path)

    def drop_collection(self, collection_id: str) -> None:
        """The alias and every version of the collection."""
        with self._lock:
            name = self._name(collection_id)
            if self._aliases().get(name) is not None:
                self._alias_ops(delete=name)
            if self._call(self._client.collection_exists, name):
                self._call(self._client.delete_collection, name)
            self._indexed.pop(name, None)
            for version in self.list_versions(collection_id):
                self.drop_version(collection_id, version)

    # --- versions and the alias ----------------------------------------------
    def version_name(self, collection_id: str, version: int) -> str:
        return f"{self._prefix}{collection_id.replace('-', '')}_v{version}"

    def at_version(self, collection_id: str, version: int) -> VectorStore:
        """A view of this store (same client and lock) whose methods act on one
        physical version of the collection instead of its alias."""
        view = copy.copy(self)
        view._pinned = {**self._pinned, collection_id: self.version_name(collection_id, version)}
        return view

    def create_version(self, collection_id: str, version: int, vector_size: int) -> None:
        """A new, empty physical collection; replaces a leftover of the same name."""
        name = self.version_name(collection_id, version)
        with self._lock:
            if self._call(self._client.collection_exists, name) and name not in self._aliases().values():
                self._call(self._client.delete_collection, name)
            self._create_physical(name, vector_size)

    def drop_version(self, collection_id: str, version: int) -> None:
        name = self.version_name(collection_id, version)
        with self._lock:
            if self._aliases().get(self._name(collection_id)) == name:
                raise BackendError(f"version {version} is the one the alias points at; not dropped")
            if self._call(self._client.collection_exists, name):
                self._call(self._client.delete_collection, name)

    def list_versions(self, collection_id: str) -> list[int]:
        """Versions that exist in Qdrant, in ascending order."""
        pattern = re.compile(re.escape(self.version_name(collection_id, 0))[:-1] + r"(\d+)$")
        with self._lock:
            response = self._call(self._client.get_collections)
        found = (pattern.match(c.name) for c in response.collections)
        return sorted(int(m.group(1)) for m in found if m)

    def aliased_version(self, collection_id: str) -> int | None:
        """The version the alias points at; None without an alias (or for a
        collection created before versions existed, which is its own name)."""
        target = self._aliases().get(self._name(collection_id))
        if target is None:
            return None
        match = re.search(r"_v(\d+)$", target)
        return int(match.group(1)) if match else None

    def point_alias(self, collection_id: str, version: int) -> None:
        """Point the collection's alias at ``version`` in one Qdrant call (delete and
        create together), so every query sees either the old or the new version."""
        alias = self._name(collection_id)
        target = self.version_name(collection_id, version)
        with self._lock:
            aliases = self._aliases()
            if alias not in aliases and self._call(self._client.collection_exists, alias):
                # A collection from before versions: it holds the alias's name, so it
                # must go before the alias can exist (a moment without the collection).
                log.warning("replacing the unversioned Qdrant collection %s by an alias", alias)
                self._call(self._client.delete_collection, alias)
            self._alias_ops(delete=alias if alias in aliases else None, create=(alias, target))

    def _aliases(self) -> dict[str, str]:
        with self._lock:
            response = self._call(self._client.get_aliases)
        return {a.alias_name: a.collection_name for a in response.aliases}

    def _alias_ops(self, *, delete: str | None = None, create: tuple[str, str] | None = None) -> None:
        from qdrant_client import models

        ops: list[Any] = []
        if delete is not None:
            ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=delete)))
        if create is not None:
            alias, target = create
            ops.append(
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name=target, alias_name=alias)
                )
            )
        with self._lock:
            self._call(self._client.update_collection_aliases, change_aliases_operations=ops)

    def delete_document_everywhere(self, collection_id: str, document_id: str) -> None:
        """A document's points in every version (the served one, one being built,
        the one kept for rollback), so no version can bring it back."""
        for version in self.list_versions(collection_id):
            self.at_version(collection_id, version).delete_document(collection_id, document_id)
        if self.aliased_version(collection_id) is None:
            self.delete_document(collection_id, document_id)

    def upsert(self, collection_id: str, points: Sequence[ChunkPoint]) -> None:
        from qdrant_client import models

        if not points:
            return
        structs = []
        for p in points:
            vectors: dict[str, Any] = {DENSE: list(map(float, p.vector))}
            if p.lexical:
                vectors[LEXICAL] = models.SparseVector(indices=p.lexical.indices, values=p.lexical.values)
            payload: dict[str, Any] = {
                "document_id": p.document_id,
                "chunk_index": p.chunk_index,
                "text": p.text,
                "filename": p.filename,
                "page": p.page,
                "section": p.section,
                "metadata": p.metadata,
                **p.extra,
            }
            if p.uploaded_at is not None:
                payload["uploaded_at"] = p.uploaded_at.isoformat()
            structs.append(
                models.PointStruct(
                    id=point_id(collection_id, p.document_id, p.chunk_index), vector=vectors, payload=payload
                )
            )
        name = self._name(collection_id)
        with self._lock:
            self._ensure_metadata_indexes(name, points)
            self._call(self._client.upsert, name, points=structs, wait=True)

    def delete_document(self, collection_id: str, document_id: str) -> None:
        from qdrant_client import models

        name = self._name(collection_id)
        with self._lock:
            if not self._call(self._client.collection_exists, name):
                return
            self._call(
                self._client.delete,
                name,
                points_selector=models.FilterSelector(filter=_document_filter(document_id)),
                wait=True,
            )

    def delete_chunks_from(self, collection_id: str, document_id: str, first_index: int) -> None:
        """Remove a document's chunks with index >= first_index (left over when a
        re-index produced fewer chunks than before)."""
        from qdrant_client import models

        name = self._name(collection_id)
        with self._lock:
            if not self._call(self._client.collection_exists, name):
                return
            flt = models.Filter(
                must=[
                    models.FieldCondition(key="document_id", match=models.MatchValue(value=document_id)),
                    models.FieldCondition(key="chunk_index", range=models.Range(gte=first_index)),
                ]
            )
            self._call(
                self._client.delete,
                name,
                points_selector=models.FilterSelector(filter=flt),
                wait=True,
            )

    def count(self, collection_id: str, document_id: str | None = None) -> int:
        name = self._name(collection_id)
        with self._lock:
            if not self._call(self._client.collection_exists, name):
                return 0
            flt = _document_filter(document_id) if document_id else None
            result = self._call(self._client.count, name, count_filter=flt, exact=True)
        return int(result.count)

    def search(
        self,
        collection_id: str,
        limit: int,
        *,
        dense: Sequence[float] | None = None,
        lexical: SparseTerms | None = None,
        where: SearchFilter | None = None,
        candidates: int | None = None,
    ) -> list[ScoredChunk]:
        """Best ``limit`` chunks by the dense vector, the lexical vector, or both.

        With both, each side fetches ``candidates`` chunks (default: ``limit``)
        and Qdrant fuses the two rankings by reciprocal rank; ``score`` is then the
        fused score. Scores are cosine for dense alone and BM25 for lexical alone.
        When ``dense`` is given, every hit also carries its cosine ``similarity``.
        """
        from qdrant_client import models

        if dense is None and lexical is None:
            raise ValueError("search needs a dense vector, a lexical vector or both")
        name = self._name(collection_id)
        flt = _filter(where)
        dense_query = list(map(float, dense)) if dense is not None else None
        sparse_query = (
            models.SparseVector(indices=lexical.indices, values=lexical.values) if lexical is not None else None
        )
        kwargs: dict[str, Any]
        if dense_query is not None and sparse_query is not None:
            pool = max(candidates or limit, limit)
            kwargs = {
                "prefetch": [
                    models.Prefetch(query=dense_query, using=DENSE, limit=pool),
                    models.Prefetch(query=sparse_query, using=LEXICAL, limit=pool),
                ],
                "query": models.FusionQuery(fusion=models.Fusion.RRF),
            }
        elif dense_query is not None:
            kwargs = {"query": dense_query, "using": DENSE}
        else:
            kwargs = {"query": sparse_query, "using": LEXICAL}
        if sparse_query is not None and not sparse_query.indices and dense_query is None:
            return []  # a query of stop words only matches nothing lexically
        with self._lock:
            if not self._call(self._client.collection_exists, name):
                return []
            response = self._call(
                self._client.query_points,
                name,
                query_filter=flt,
                limit=limit,
                with_payload=True,
                with_vectors=[DENSE] if dense_query is not None else False,
                **kwargs,
            )
        hits: list[ScoredChunk] = []
        for point in response.points:
            payload = point.payload or {}
            similarity = None
            if dense_query is not None and isinstance(point.vector, dict) and DENSE in point.vector:
                stored = point.vector[DENSE]
                similarity = _cosine(dense_query, stored)  # type: ignore[arg-type]
            hits.append(
                ScoredChunk(
                    document_id=str(payload.get("document_id", "")),
                    chunk_index=int(payload.get("chunk_index", 0)),
                    text=str(payload.get("text", "")),
                    score=float(point.score),
                    filename=str(payload.get("filename", "")),
                    page=payload.get("page"),
                    section=payload.get("section"),
                    similarity=similarity,
                    metadata=dict(payload.get("metadata") or {}),
                )
            )
        return hits


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na = sum(x * x for x in a) ** 0.5
    nb = sum(y * y for y in b) ** 0.5
    return dot / (na * nb) if na and nb else 0.0


def _schema_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    return "keyword"


def _filter(where: SearchFilter | None) -> Any:
    from qdrant_client import models

    if where is None or not where:
        return None
    must: list[Any] = []
    if where.document_ids is not None:
        must.append(models.FieldCondition(key="document_id", match=models.MatchAny(any=list(where.document_ids))))
    if where.filenames is not None:
        must.append(models.FieldCondition(key="filename", match=models.MatchAny(any=list(where.filenames))))
    if where.uploaded_after or where.uploaded_before:
        must.append(
            models.FieldCondition(
                key="uploaded_at",
                range=models.DatetimeRange(gte=where.uploaded_after, lte=where.uploaded_before),
            )
        )
    for key, value in (where.metadata or {}).items():
        values = value if isinstance(value, list) else [value]
        conditions = [_metadata_condition(f"metadata.{key}", v) for v in values]
        must.append(conditions[0] if len(conditions) == 1 else models.Filter(should=conditions))
    return models.Filter(must=must)


def _metadata_condition(path: str, value: MetadataValue) -> Any:
    from qdrant_client import models

    if isinstance(value, float):  # match takes strings, integers and booleans only
        return models.FieldCondition(key=path, range=models.Range(gte=value, lte=value))
    return models.FieldCondition(key=path, match=models.MatchValue(value=value))


def _document_filter(document_id: str) -> Any:
    from qdrant_client import models

    return models.Filter(
        must=[models.FieldCondition(key="document_id", match=models.MatchValue(value=document_id))]
    )


class _NullLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None
