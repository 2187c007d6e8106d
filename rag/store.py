"""Vector store adapter: the only module that talks to Qdrant.

Qdrant local mode (an on-disk store in the data directory, one process at a time)
by default; a Qdrant server when a URL is set. Both go through the same
``QdrantClient`` API, so every method here works the same on either.

Point IDs are derived from (collection, document, chunk index), so re-indexing a
document overwrites its points instead of duplicating them.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import BackendError

__all__ = ["ChunkPoint", "ScoredChunk", "VectorStore", "point_id"]

log = logging.getLogger(__name__)

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
        """The alias and every version of the collection."""
        with self._lock:
            name = self._name(collection_id)
            if self._aliases().get(name) is not None:
                self._alias_ops(delete=name)
            if self._call(self._client.collection_exists, name):
                self._call(self._client.delete_collection, name)
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
