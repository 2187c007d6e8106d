"""The one retrieval path: a query's best chunks in a collection.

``/search``, ``/ask``, the OpenAI chat route, ``rag eval`` and the re-index
quality gate all call ``Retriever.search`` (one query) or ``search_many`` (a
batch, embedded together) with a ``SearchOptions``. Steps: embed the query
with the model that built the version being read (dense and hybrid modes),
encode its lexical terms (lexical and hybrid), query the store (hybrid: both
sides fused by reciprocal rank in Qdrant), re-score with the cross-encoder when
asked.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rag.embedder import Embedder, EmbedderSet, Reranker
from rag.errors import BackendError, InvalidRequestError
from rag.lexical import LexicalEncoder
from rag.options import SearchOptions
from rag.registry import Database, VersionRecord
from rag.settings import SearchMode, Settings
from rag.store import ScoredChunk, SearchFilter, VectorStore

__all__ = ["MAX_QUERY_CHARS", "SEARCHED_CHARS", "Retriever", "SearchHit", "Served"]

# The longest query /search and /ask take.
MAX_QUERY_CHARS = 4000
# What of a longer one (a chat's last message has no limit) is searched for.
# The lexical side reads every word of it (a question often ends a long
# pasted message; 9 ms for these 64 KiB on the dev VM), the embedder its first
# 256 tokens, though its tokenizer went through all of it: a 5 MB message
# took 5.8 s.
SEARCHED_CHARS = 65_536


@dataclass(frozen=True)
class Served:
    """A collection and its served version (``None``: nothing indexed yet), read
    together in one registry transaction by ``Retriever.served``."""

    collection_id: str
    version: VersionRecord | None


@dataclass(frozen=True)
class SearchHit:
    rank: int
    document_id: str
    filename: str
    page: int | None
    section: str | None
    chunk_index: int
    text: str
    score: float  # of the ranking that ordered the hits: cosine, BM25, fused (RRF) or re-ranker
    similarity: float | None = None  # cosine between the query and the chunk, when embedded
    metadata: dict[str, Any] = field(default_factory=dict)


class Retriever:
    """Searches a collection's served version (through its alias), or one
    given version (the quality gate's candidate)."""

    def __init__(
        self,
        *,
        registry: Database,
        store: VectorStore,
        embedders: EmbedderSet,
        lexical: LexicalEncoder,
        reranker: Reranker | None = None,
        mode: SearchMode = "hybrid",
        top_k: int = 5,
        hybrid_candidates: int = 40,
        rerank_candidates: int = 20,
    ) -> None:
        self._registry = registry
        self._store = store
        self.embedders = embedders
        self.lexical = lexical
        self.reranker = reranker
        self.mode: SearchMode = mode
        self.top_k = top_k
        self._candidates = hybrid_candidates
        self._rerank_candidates = rerank_candidates

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        registry: Database,
        store: VectorStore,
        embedders: EmbedderSet,
        lexical: LexicalEncoder,
        reranker: Reranker | None = None,
    ) -> Retriever:
        return cls(
            registry=registry,
            store=store,
            embedders=embedders,
            lexical=lexical,
            reranker=reranker,
            mode=settings.search_mode,
            top_k=settings.top_k,
            hybrid_candidates=settings.hybrid_candidates,
            rerank_candidates=settings.rerank_candidates,
        )

    def served(self, name: str) -> Served:
        """The collection called ``name`` and its served version, in one read
        (``NotFoundError`` when there is no such collection)."""
        with self._registry.unit_of_work() as uow:
            return Served(*uow.versions.served_by_name(name))

    def search(
        self,
        collection: str | Served,
        query: str,
        options: SearchOptions = SearchOptions(),
        *,
        version: int | None = None,
    ) -> tuple[list[SearchHit], dict[str, float]]:
        """The ``top_k`` best chunks for ``query`` (default ``RAG_TOP_K``) and the
        seconds spent embedding (embed_s: dense and lexical), in the store
        (store_s), re-ranking (rerank_s, when it ran) and in all (total_s).
        ``mode``: default ``RAG_SEARCH_MODE``. ``rerank``: default yes when a
        re-ranker is configured. ``version``: search that version instead of the
        served one. ``collection``: its id, or what ``served`` read (saves a
        registry read on the request path)."""
        if not query.strip():
            raise InvalidRequestError("the query is empty")
        started = time.perf_counter()
        hits, timings = self._search(collection, [query], options, version)
        timings["total_s"] = time.perf_counter() - started
        return hits[0], timings

    def search_many(
        self,
        collection: str | Served,
        queries: Sequence[str],
        options: SearchOptions = SearchOptions(),
        *,
        version: int | None = None,
    ) -> list[list[SearchHit]]:
        """``search`` for many queries, embedded in batches (far faster than one
        by one); the same hits as ``search`` for each."""
        if any(not q.strip() for q in queries):
            raise InvalidRequestError("a query is empty")
        return self._search(collection, queries, options, version)[0]

    def use_reranker(self, rerank: bool | None) -> bool:
        if rerank and self.reranker is None:
            raise InvalidRequestError("re-ranking was asked for, but no re-ranking model is configured")
        return self.reranker is not None and rerank is not False

    # --- the steps ----------------------------------------------------------------
    def _search(
        self,
        collection: str | Served,
        queries: Sequence[str],
        options: SearchOptions,
        version: int | None,
    ) -> tuple[list[list[SearchHit]], dict[str, float]]:
        queries = [q[:SEARCHED_CHARS] for q in queries]
        mode = options.mode or self.mode
        where = options.where
        use_reranker = self.use_reranker(options.rerank)
        k = options.top_k or self.top_k
        collection_id = collection.collection_id if isinstance(collection, Served) else collection
        if version is not None:
            store = self._store.at_version(collection_id, version)
            return self._run(store, collection_id, queries, self._model_of(collection_id, version), k, mode,
                             where, use_reranker)
        if isinstance(collection, Served):
            active = collection.version
        else:
            with self._registry.unit_of_work() as uow:
                active = uow.versions.active(collection_id)
        used = active.version if active is not None else None
        try:
            embedder = self.embedders.get(active.embedding_model if active is not None else None)
            return self._run(self._store, collection_id, queries, embedder, k, mode, where, use_reranker)
        except BackendError:
            # A re-index or rollback moves the alias first, then the registry: a query
            # embedded for the version it read may reach the next one, whose model
            # can differ in size. Only then is it worth once more, with that model.
            served = self._store.aliased_version(collection_id)
            if served is None or served == used:
                raise
            embedder = self._model_of(collection_id, served)
            return self._run(self._store, collection_id, queries, embedder, k, mode, where, use_reranker)

    def _model_of(self, collection_id: str, version: int) -> Embedder:
        with self._registry.unit_of_work() as uow:
            records = uow.versions.list_for(collection_id)
        for record in records:
            if record.version == version:
                return self.embedders.get(record.embedding_model)
        return self.embedders.default

    def _run(
        self,
        store: VectorStore,
        collection_id: str,
        queries: Sequence[str],
        embedder: Embedder,
        k: int,
        mode: SearchMode,
        where: SearchFilter | None,
        use_reranker: bool,
    ) -> tuple[list[list[SearchHit]], dict[str, float]]:
        t = time.perf_counter()
        dense: Sequence[list[float] | None] = (
            embedder.embed_queries(list(queries)) if mode in ("hybrid", "dense") else [None] * len(queries)
        )
        timings = {"embed_s": time.perf_counter() - t, "store_s": 0.0}
        limit = max(k, self._rerank_candidates) if use_reranker else k
        results: list[list[SearchHit]] = []
        for query, vector in zip(queries, dense, strict=True):
            t = time.perf_counter()
            lexical = self.lexical.encode_query(query) if mode in ("hybrid", "lexical") else None
            timings["embed_s"] += time.perf_counter() - t
            t = time.perf_counter()
            chunks = store.search(
                collection_id, limit, dense=vector, lexical=lexical, where=where, candidates=self._candidates
            )
            timings["store_s"] += time.perf_counter() - t
            if use_reranker and chunks and self.reranker is not None:
                t = time.perf_counter()
                scores = self.reranker.score(query, [c.text for c in chunks])
                order = sorted(range(len(chunks)), key=lambda i: scores[i], reverse=True)[:k]
                chunks = [replace(chunks[i], score=scores[i]) for i in order]
                timings["rerank_s"] = timings.get("rerank_s", 0.0) + time.perf_counter() - t
            results.append([_hit(i, c) for i, c in enumerate(chunks[:k], start=1)])
        return results, timings


def _hit(rank: int, chunk: ScoredChunk) -> SearchHit:
    return SearchHit(
        rank=rank,
        document_id=chunk.document_id,
        filename=chunk.filename,
        page=chunk.page,
        section=chunk.section,
        chunk_index=chunk.chunk_index,
        text=chunk.text,
        score=chunk.score,
        similarity=chunk.similarity,
        metadata=chunk.metadata,
    )
