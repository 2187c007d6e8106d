"""Vector store adapter: the only module that talks to Qdrant.

Qdrant local mode (an on-disk store in the data directory, one process at a time)
by default; a Qdrant server when a URL is set. Both go through the same
``QdrantClient`` API, so every method here works the same on either.

Point IDs are derived from (collection, document, chunk index), so re-indexing a
document overwrites its points instead of duplicating them.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import BackendError

__all__ = ["ChunkPoint", "ScoredChunk", "VectorStore", "point_id"]

# Fixed namespace: IDs must be stable across processes and releases.
_POINT_NAMESPACE = uuid.UUID("6f1d3c52-8a4e-4f0e-9a57-3f8f2b1c9d10")


def point_id(collection_id: str, document_id: str, chunk_index: int) -> str:
    """Deterministic Qdrant point ID of one chunk."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{collection_id}/{document_id}/{chunk_index}"))


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


@dataclass(frozen=True)
class ScoredChunk:
    document_id: str
    chunk_index: int
    text: str
    score: float
    filename: str
    page: int | None
    section: str | None


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

    def _name(self, collection_id: str) -> str:
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
        from qdrant_client import models

        name = self._name(collection_id)
        with self._lock:
            if self._call(self._client.collection_exists, name):
                return
            self._call(
                self._client.create_collection,
                name,
                vectors_config=models.VectorParams(size=vector_size, distance=models.Distance.COSINE),
            )
            if hasattr(self._client, "create_payload_index"):
                self._call(
                    self._client.create_payload_index,
                    name,
                    field_name="document_id",
                    field_schema=models.PayloadSchemaType.KEYWORD,
                )

    def drop_collection(self, collection_id: str) -> None:
        with self._lock:
            name = self._name(collection_id)
            if self._call(self._client.collection_exists, name):
                self._call(self._client.delete_collection, name)

    def upsert(self, collection_id: str, points: Sequence[ChunkPoint]) -> None:
        from qdrant_client import models

        if not points:
            return
        structs = [
            models.PointStruct(
                id=point_id(collection_id, p.document_id, p.chunk_index),
                vector=list(map(float, p.vector)),
                payload={
                    "document_id": p.document_id,
                    "chunk_index": p.chunk_index,
                    "text": p.text,
                    "filename": p.filename,
                    "page": p.page,
                    "section": p.section,
                    **p.extra,
                },
            )
            for p in points
        ]
        with self._lock:
            self._call(self._client.upsert, self._name(collection_id), points=structs, wait=True)

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

    def search(self, collection_id: str, vector: Sequence[float], limit: int) -> list[ScoredChunk]:
        name = self._name(collection_id)
        with self._lock:
            if not self._call(self._client.collection_exists, name):
                return []
            response = self._call(
                self._client.query_points,
                name,
                query=list(map(float, vector)),
                limit=limit,
                with_payload=True,
            )
        hits: list[ScoredChunk] = []
        for point in response.points:
            payload = point.payload or {}
            hits.append(
                ScoredChunk(
                    document_id=str(payload.get("document_id", "")),
                    chunk_index=int(payload.get("chunk_index", 0)),
                    text=str(payload.get("text", "")),
                    score=float(point.score),
                    filename=str(payload.get("filename", "")),
                    page=payload.get("page"),
                    section=payload.get("section"),
                )
            )
        return hits


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
