"""Indexing of one document: original → parse → chunk → embed → Qdrant.

Called by the Celery task. Every outcome is recorded on the document: 'indexed'
with its chunk count, or 'failed' with a reason a person can act on. Upserts use
deterministic point IDs, so running the same document twice does no harm.

A document is written into the version its collection's alias serves and, while
a full re-index builds a new version, into that one too (with the new version's
embedding model), so uploads made during a re-index are in both. ``index_into``
writes one document into one given physical version: the re-index runner's path.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from ingest.batching import EmbedBatcher
from ingest.chunking import Chunk, chunk_blocks
from ingest.parsing import Block
from ingest.sandbox import InlineParser, Parser
from rag import metrics
from rag.blobs import BlobStore
from rag.embedder import Embedder, EmbedderSet
from rag.errors import BackendError, ParseCancelledError, RagError
from rag.lexical import LexicalEncoder
from rag.registry import Database, DocumentRecord, DocumentStatus, VersionStatus
from rag.store import ChunkPoint, VectorStore

__all__ = ["IndexOutcome", "Indexer"]

log = logging.getLogger(__name__)

# Chunks per embedding request: a document's upsert of one request's points
# overlaps the embedding of its next request (and of other documents').
_EMBED_REQUEST = 64


@dataclass(frozen=True)
class IndexOutcome:
    document_id: str
    status: str  # "indexed", "failed" or "skipped" (document gone)
    chunks: int = 0
    error: str | None = None


class Indexer:
    def __init__(
        self,
        *,
        registry: Database,
        store: VectorStore,
        embedder: Embedder,
        blobs: BlobStore,
        chunk_max_tokens: int,
        chunk_overlap_tokens: int,
        lexical: LexicalEncoder | None = None,
        embed_section_titles: bool = True,
        embedders: EmbedderSet | None = None,
        parser: Parser | None = None,
        embed_batch_texts: int = 128,
    ) -> None:
        self._registry = registry
        # ingest.sandbox.ProcessParser in the service (build_parser); inline by default.
        self._parser: Parser = parser or InlineParser()
        self._lexical = lexical or LexicalEncoder()
        self._section_titles = embed_section_titles
        self._store = store
        self._embedder = embedder
        self._embedders = embedders or EmbedderSet(embedder)
        self._blobs = blobs
        self._chunk_max_tokens = chunk_max_tokens
        self._chunk_overlap_tokens = chunk_overlap_tokens
        self._embed_batch_texts = embed_batch_texts
        self._batchers: dict[int, EmbedBatcher] = {}
        self._batchers_lock = threading.Lock()

    @property
    def chunking(self) -> str:
        """The chunking settings, as an index version records them."""
        return f"max_tokens={self._chunk_max_tokens} overlap_tokens={self._chunk_overlap_tokens}"

    def index_document(self, document_id: str) -> IndexOutcome:
        document = self._document(document_id)
        if document is None:
            return IndexOutcome(document_id, "skipped")
        self._set_status(document.id, DocumentStatus.PROCESSING)
        try:
            count = self._index(document)
        except ParseCancelledError:
            # Deleted (or its collection) while it was being parsed: the parse
            # was killed before anything was written.
            return IndexOutcome(document.id, "skipped")
        except BackendError:
            # The store or DB is down: retryable, so leave the document queued.
            self._set_status(document.id, DocumentStatus.QUEUED)
            raise
        except RagError as exc:
            return self._fail(document, exc.message)
        except Exception as exc:
            log.exception("indexing %s (%s) failed", document.filename, document.id)
            return self._fail(document, f"{type(exc).__name__}: {exc}")
        if self._document(document.id) is None:
            # Deleted while it was being indexed: take back what was written.
            self._store.delete_document_everywhere(document.collection_id, document.id)
            return IndexOutcome(document.id, "skipped")
        self._set_status(document.id, DocumentStatus.INDEXED, chunk_count=count)
        return IndexOutcome(document.id, "indexed", chunks=count)

    def _document(self, document_id: str) -> DocumentRecord | None:
        with self._registry.unit_of_work() as uow:
            return uow.documents.get_by_id(document_id)

    def _set_status(
        self, document_id: str, status: DocumentStatus, *, error: str | None = None, chunk_count: int | None = None
    ) -> None:
        with self._registry.unit_of_work() as uow:
            uow.documents.set_status(document_id, status, error=error, chunk_count=chunk_count)

    def _fail(self, document: DocumentRecord, reason: str) -> IndexOutcome:
        self._set_status(document.id, DocumentStatus.FAILED, error=reason, chunk_count=0)
        self._store.delete_document_everywhere(document.collection_id, document.id)
        return IndexOutcome(document.id, "failed", error=reason)

    def parse(self, document: DocumentRecord) -> list[Block]:
        path = self._blobs.path(document.content_hash)
        if not path.is_file():
            raise RagError(f"the stored original of {document.filename} is missing")
        with metrics.stage("parse"):
            # A deleted document (or collection) stops its running parse.
            blocks = self._parser.parse(
                path, document.filename, cancelled=lambda: self._document(document.id) is None
            )
        log.info("parsed %s (%s): %d blocks", document.filename, document.id, len(blocks))
        return blocks

    def close(self) -> None:
        """Stop any parse still running, then the embedding queues."""
        self._parser.close()
        with self._batchers_lock:
            batchers, self._batchers = list(self._batchers.values()), {}
        for batcher in batchers:
            batcher.close()

    def chunk(self, document: DocumentRecord, embedder: Embedder | None = None) -> list[Chunk]:
        return self._chunk(self.parse(document), embedder or self._embedder)

    def _chunk(self, blocks: list[Block], embedder: Embedder) -> list[Chunk]:
        max_tokens = min(self._chunk_max_tokens, embedder.chunk_token_limit)
        with metrics.stage("chunk"):
            chunks = chunk_blocks(
                blocks,
                count_tokens=embedder.count_tokens,
                max_tokens=max_tokens,
                overlap_tokens=min(self._chunk_overlap_tokens, max_tokens // 2),
            )
        metrics.add_chunks(len(chunks))
        return chunks

    def _targets(self, collection_id: str) -> list[tuple[VectorStore, Embedder]]:
        """Where a document goes: the served version (through the alias), then
        any version a full re-index is building."""
        with self._registry.unit_of_work() as uow:
            active = uow.versions.active(collection_id)
            building_versions = uow.versions.with_status(collection_id, VersionStatus.BUILDING)
        targets = [(self._store, self._embedders.get(active.embedding_model if active else None))]
        for building in building_versions:
            targets.append(
                (
                    self._store.at_version(collection_id, building.version),
                    self._embedders.get(building.embedding_model),
                )
            )
        return targets

    def _index(self, document: DocumentRecord) -> int:
        blocks = self.parse(document)
        counts = [
            self._write(document, blocks, store, embedder) for store, embedder in self._targets(document.collection_id)
        ]
        return counts[0]

    def index_into(self, document: DocumentRecord, store: VectorStore, embedder: Embedder) -> int:
        """Parse, chunk, embed and write one document into ``store`` (a view pinned
        to one version); returns its chunk count. Records nothing."""
        return self._write(document, self.parse(document), store, embedder)

    def _write(self, document: DocumentRecord, blocks: list[Block], store: VectorStore, embedder: Embedder) -> int:
        chunks = self._chunk(blocks, embedder)
        store.ensure_collection(document.collection_id, embedder.dimension)
        texts = [self.indexed_text(c) for c in chunks]
        batcher = self.batcher(embedder)
        requests = [
            (start, batcher.submit(texts[start : start + _EMBED_REQUEST]))
            for start in range(0, len(chunks), _EMBED_REQUEST)
        ]
        try:
            for start, request in requests:
                with metrics.stage("embed"):  # waiting for this request's vectors
                    vectors = request.result()
                batch = chunks[start : start + len(vectors)]
                with metrics.stage("upsert"):
                    store.upsert(
                        document.collection_id,
                        [
                            ChunkPoint(
                                document_id=document.id,
                                chunk_index=c.index,
                                text=c.text,
                                vector=v,
                                filename=document.filename,
                                page=c.page,
                                section=c.section,
                                lexical=self._lexical.encode_document(t),
                                uploaded_at=document.created_at,
                                metadata=document.metadata,
                            )
                            for c, t, v in zip(batch, texts[start : start + len(batch)], vectors, strict=True)
                        ],
                    )
                log.info("upserted chunks %d-%d of %d of %s", start, start + len(batch) - 1, len(chunks), document.id)
        finally:
            for _, request in requests:
                request.cancel()  # after a failure: not embedded for nothing
        # A re-index that produced fewer chunks leaves no stale tail behind.
        store.delete_chunks_from(document.collection_id, document.id, len(chunks))
        return len(chunks)


    def batcher(self, embedder: Embedder) -> EmbedBatcher:
        """The shared embedding queue of ``embedder`` (one per model and process)."""
        with self._batchers_lock:
            batcher = self._batchers.get(id(embedder))
            if batcher is None:
                batcher = EmbedBatcher(embedder, max_texts=self._embed_batch_texts)
                self._batchers[id(embedder)] = batcher
            return batcher

    def indexed_text(self, chunk: Chunk) -> str:
        """What is embedded and indexed lexically for a chunk (the stored and
        returned text stays the chunk's own): its section title in front, unless
        the chunk already starts with it, so a passage deep in a section keeps
        the subject its heading names."""
        if not self._section_titles or not chunk.section or chunk.text.startswith(chunk.section):
            return chunk.text
        return f"{chunk.section}\n{chunk.text}"
