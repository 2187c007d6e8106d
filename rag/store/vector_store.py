"""``VectorStore``: the one interface the service uses, over either engine.

Qdrant Edge in this process by default (``path``), a Qdrant server when a URL is
set. Both get the same point IDs, payload, named vectors and queries, so every
method here behaves the same on either.

Versions: a RAG collection is served through an *alias* (``rag_<id>``) that
points at one physical collection ``rag_<id>_v<n>`` (a Qdrant alias on a
server; the store's own alias record with Edge). Every method taking a
``collection_id`` works on the alias; ``at_version`` returns a view of the store
pinned to one physical version (a full re-index writes its new version through
it), and ``point_alias`` moves the alias in one atomic step.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.errors import BackendError, ConfigurationError
from rag.lexical import SparseTerms
from rag.store.backend import Backend
from rag.store.model import (
    DENSE,
    INDEXED_FIELDS,
    LEXICAL,
    ChunkPoint,
    CollectionOptions,
    Match,
    NumberRange,
    PointRecord,
    QuerySpec,
    ScoredChunk,
    SearchFilter,
    point_id,
    schema_of,
)

if TYPE_CHECKING:
    from rag.settings import Settings

__all__ = ["VectorStore"]

log = logging.getLogger(__name__)

_TIE_MARGIN = 10


class VectorStore:
    """One aliased, versioned collection per RAG collection, named by its id."""

    def __init__(
        self,
        *,
        path: Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
        prefix: str = "rag_",
        legacy_path: Path | None = None,
        options: CollectionOptions | None = None,
        index_after: int = 20_000,
        backend: Backend | None = None,
    ) -> None:
        """``url``: a Qdrant server. Otherwise Qdrant Edge in ``path`` (None: a
        temporary folder, for tests); a qdrant-client local-mode store found at
        ``legacy_path`` is first migrated into it."""
        self._options = options or CollectionOptions()
        if backend is not None:
            self._backend: Backend = backend
        elif url:
            from rag.store.server import ServerBackend

            self._backend = ServerBackend.connect(url, api_key, self._options)
        else:
            from rag.store.edge import EdgeBackend

            if path is not None and legacy_path is not None:
                from rag.store.migrate import migrate_local_store

                migrate_local_store(legacy_path, path)
            self._backend = EdgeBackend(path, index_after=index_after)
        self._prefix = prefix
        self._indexed: dict[str, set[str]] = {}  # physical collection -> indexed payload fields
        self._pinned: dict[str, str] = {}  # collection id -> physical name, in views

    @classmethod
    def from_settings(cls, settings: Settings) -> VectorStore:
        options = CollectionOptions(
            shard_number=settings.qdrant_shard_number,
            replication_factor=settings.qdrant_replication_factor,
            write_consistency_factor=settings.qdrant_write_consistency_factor,
            on_disk_vectors=settings.qdrant_on_disk_vectors,
            int8_quantization=settings.qdrant_quantization == "int8",
            hnsw_ef=settings.store_hnsw_ef,
        )
        if settings.qdrant_url:
            return cls(url=settings.qdrant_url, api_key=settings.qdrant_api_key, options=options)
        return cls(
            path=settings.store_path,
            legacy_path=settings.qdrant_path,
            options=options,
            index_after=settings.store_index_after,
        )

    @property
    def backend(self) -> Backend:
        return self._backend

    def _name(self, collection_id: str) -> str:
        pinned = self._pinned.get(collection_id)
        if pinned is not None:
            return pinned
        return f"{self._prefix}{collection_id.replace('-', '')}"

    def close(self) -> None:
        self._backend.close()

    def ping(self) -> None:
        self._backend.ping()

    def optimize(self, collection_id: str) -> bool:
        """Build the served version's search index now (embedded engine only;
        it is otherwise built in the background once enough points arrived)."""
        build = getattr(self._backend, "optimize", None)
        return bool(build(self._name(collection_id))) if build is not None else False

    # --- collections ---------------------------------------------------------
    def ensure_collection(self, collection_id: str, vector_size: int) -> None:
        """The collection's alias exists: if not, version 1 is created behind it."""
        name = self._name(collection_id)
        if self._backend.exists(name):
            layout = self._backend.layout(name)
            if DENSE not in layout.dense:
                raise ConfigurationError(
                    f"the Qdrant collection {name} was made by an earlier version (one unnamed "
                    "vector, no lexical vectors); delete the RAG collection and ingest again"
                )
            self._indexed[self._physical(name)] = set(layout.indexed)
            return
        if collection_id in self._pinned:
            self._create_physical(name, vector_size)
            return
        self.create_version(collection_id, 1, vector_size)
        self.point_alias(collection_id, 1)

    def _physical(self, name: str) -> str:
        return self._backend.aliases().get(name, name)

    def _create_physical(self, name: str, vector_size: int) -> None:
        self._backend.create(name, vector_size)
        for field_name, schema in INDEXED_FIELDS.items():
            self._backend.create_index(name, field_name, schema)
        self._indexed[name] = set(INDEXED_FIELDS)

    def _ensure_metadata_indexes(self, name: str, points: Sequence[ChunkPoint]) -> None:
        """Index each metadata key the first time it is seen, typed by its value."""
        known = self._indexed.get(name)
        if known is None:
            known = set(self._backend.layout(name).indexed)
            self._indexed[name] = known
        for p in points:
            for key, value in p.metadata.items():
                path = f"metadata.{key}"
                if path not in known:
                    self._backend.create_index(name, path, schema_of(value))
                    known.add(path)

    def drop_collection(self, collection_id: str) -> None:
        """The alias and every version of the collection."""
        name = self._name(collection_id)
        if name in self._backend.aliases():
            self._backend.set_alias(name, None)
        if name in self._backend.list_collections():
            self._backend.delete(name)
        self._indexed.pop(name, None)
        for version in self.list_versions(collection_id):
            self.drop_version(collection_id, version)

    # --- versions and the alias ----------------------------------------------
    def version_name(self, collection_id: str, version: int) -> str:
        return f"{self._prefix}{collection_id.replace('-', '')}_v{version}"

    def at_version(self, collection_id: str, version: int) -> VectorStore:
        """A view of this store (same engine) whose methods act on one physical
        version of the collection instead of its alias."""
        view = copy.copy(self)
        view._pinned = {**self._pinned, collection_id: self.version_name(collection_id, version)}
        return view

    def create_version(self, collection_id: str, version: int, vector_size: int) -> None:
        """A new, empty physical collection; replaces a leftover of the same name."""
        name = self.version_name(collection_id, version)
        if name in self._backend.list_collections() and name not in self._backend.aliases().values():
            self._backend.delete(name)
        self._indexed.pop(name, None)
        self._create_physical(name, vector_size)

    def drop_version(self, collection_id: str, version: int) -> None:
        name = self.version_name(collection_id, version)
        if self._backend.aliases().get(self._name(collection_id)) == name:
            raise BackendError(f"version {version} is the one the alias points at; not dropped")
        if name in self._backend.list_collections():
            self._backend.delete(name)
        self._indexed.pop(name, None)

    def list_versions(self, collection_id: str) -> list[int]:
        """Versions that exist in the store, in ascending order."""
        pattern = re.compile(re.escape(self.version_name(collection_id, 0))[:-1] + r"(\d+)$")
        found = (pattern.match(name) for name in self._backend.list_collections())
        return sorted(int(m.group(1)) for m in found if m)

    def aliased_version(self, collection_id: str) -> int | None:
        """The version the alias points at; None without an alias (or for a
        collection created before versions existed, which is its own name)."""
        target = self._backend.aliases().get(self._name(collection_id))
        if target is None:
            return None
        match = re.search(r"_v(\d+)$", target)
        return int(match.group(1)) if match else None

    def point_alias(self, collection_id: str, version: int) -> None:
        """Point the collection's alias at ``version`` in one atomic step, so every
        query sees either the old or the new version."""
        alias = self._name(collection_id)
        target = self.version_name(collection_id, version)
        if alias not in self._backend.aliases() and alias in self._backend.list_collections():
            # A collection from before versions: it holds the alias's name, so it
            # must go before the alias can exist (a moment without the collection).
            log.warning("replacing the unversioned collection %s by an alias", alias)
            self._backend.delete(alias)
        self._backend.set_alias(alias, target)

    def delete_document_everywhere(self, collection_id: str, document_id: str) -> None:
        """A document's points in every version (the served one, one being built,
        the one kept for rollback), so no version can bring it back."""
        for version in self.list_versions(collection_id):
            self.at_version(collection_id, version).delete_document(collection_id, document_id)
        if self.aliased_version(collection_id) is None:
            self.delete_document(collection_id, document_id)

    # --- points ----------------------------------------------------------------
    def upsert(self, collection_id: str, points: Sequence[ChunkPoint]) -> None:
        if not points:
            return
        records = []
        for p in points:
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
            sparse = {LEXICAL: (list(p.lexical.indices), list(p.lexical.values))} if p.lexical else {}
            records.append(
                PointRecord(
                    id=point_id(collection_id, p.document_id, p.chunk_index),
                    # The embedder's lists go as they are (a copy costs a third of an upsert).
                    vectors={DENSE: p.vector if isinstance(p.vector, list) else list(map(float, p.vector))},
                    sparse=sparse,
                    payload=payload,
                )
            )
        name = self._physical(self._name(collection_id))
        self._ensure_metadata_indexes(name, points)
        self._backend.upsert(name, records)

    def delete_document(self, collection_id: str, document_id: str) -> None:
        name = self._name(collection_id)
        if self._backend.exists(name):
            self._backend.delete_where(name, [Match("document_id", (document_id,))])

    def delete_chunks_from(self, collection_id: str, document_id: str, first_index: int) -> None:
        """Remove a document's chunks with index >= first_index (left over when a
        re-index produced fewer chunks than before)."""
        name = self._name(collection_id)
        if self._backend.exists(name):
            self._backend.delete_where(
                name, [Match("document_id", (document_id,)), NumberRange("chunk_index", gte=first_index)]
            )

    def count(self, collection_id: str, document_id: str | None = None) -> int:
        name = self._name(collection_id)
        if not self._backend.exists(name):
            return 0
        return self._backend.count(name, [Match("document_id", (document_id,))] if document_id else [])

    def search(
        self,
        collection_id: str,
        limit: int,
        *,
        dense: Sequence[float] | None = None,
        lexical: SparseTerms | None = None,
        where: SearchFilter | None = None,
        candidates: int | None = None,
        exact: bool = False,
    ) -> list[ScoredChunk]:
        """Best ``limit`` chunks by the dense vector, the lexical vector, or both.

        With both, each side fetches ``candidates`` chunks (default: ``limit``)
        and the engine fuses the two rankings by reciprocal rank; ``score`` is then
        the fused score. Scores are cosine for dense alone and BM25 for lexical
        alone. When ``dense`` is given, every hit also carries its cosine
        ``similarity``. ``exact`` scans every dense vector instead of the HNSW graph.
        """
        if dense is None and lexical is None:
            raise ValueError("search needs a dense vector, a lexical vector or both")
        if lexical is not None and not lexical.indices and dense is None:
            return []  # a query of stop words only matches nothing lexically
        name = self._name(collection_id)
        dense_query = [float(x) for x in dense] if dense is not None else None
        spec = QuerySpec(
            limit=limit + _TIE_MARGIN,
            dense=dense_query,
            lexical=lexical,
            pool=max(candidates or limit, limit),
            where=tuple(where.conditions()) if where else (),
            exact=exact,
            # Dense alone scores by cosine already; fused scores need the vectors
            # (20 of them cost 1.3 ms of a 3.3 ms query at 100,000 points).
            with_dense=dense_query is not None and lexical is not None,
            hnsw_ef=max(self._options.hnsw_ef, limit),
        )
        if not self._backend.exists(name):
            return []
        # Equal scores (frequent after rank fusion: 1/12 + 1/12 = 1/6) are ordered
        # by point id, so every engine returns the same order; scores are compared
        # to 6 decimals, as Edge adds in float32 and a server in float64. The
        # margin keeps a tie that straddles the limit from picking different
        # points on different engines.
        found = sorted(self._backend.query(name, spec), key=lambda h: (-round(h.score, 6), h.id))[:limit]
        hits: list[ScoredChunk] = []
        for hit in found:
            payload = hit.payload
            similarity = None
            if dense_query is not None and hit.dense is not None:
                similarity = _cosine(dense_query, hit.dense)
            elif dense_query is not None and lexical is None:
                similarity = hit.score
            hits.append(
                ScoredChunk(
                    document_id=str(payload.get("document_id", "")),
                    chunk_index=int(payload.get("chunk_index", 0)),
                    text=str(payload.get("text", "")),
                    score=hit.score,
                    filename=str(payload.get("filename", "")),
                    page=payload.get("page"),
                    section=payload.get("section"),
                    similarity=similarity,
                    metadata=dict(payload.get("metadata") or {}),
                )
            )
        return hits


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    import numpy as np  # a Python loop over 384 floats costs ~0.1 ms a hit

    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = float(np.linalg.norm(va)), float(np.linalg.norm(vb))
    return float(va @ vb) / (na * nb) if na and nb else 0.0
