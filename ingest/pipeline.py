"""Indexing of one document: original → parse → chunk → embed → Qdrant.

Called by the Celery task. Every outcome is recorded on the document: 'indexed'
with its chunk count, or 'failed' with a reason a person can act on. Upserts use
deterministic point IDs, so running the same document twice does no harm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ingest.chunking import Chunk, chunk_blocks
from ingest.parsing import parse_file
from rag.blobs import BlobStore
from rag.embedder import Embedder
from rag.errors import BackendError, RagError
from rag.lexical import LexicalEncoder
from rag.registry import DocumentRecord, DocumentStatus, Registry
from rag.store import ChunkPoint, VectorStore

__all__ = ["IndexOutcome", "Indexer"]

log = logging.getLogger(__name__)

_UPSERT_BATCH = 256


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
        registry: Registry,
        store: VectorStore,
        embedder: Embedder,
        blobs: BlobStore,
        chunk_max_tokens: int,
        chunk_overlap_tokens: int,
        lexical: LexicalEncoder | None = None,
        embed_section_titles: bool = True,
    ) -> None:
        self._registry = registry
        self._lexical = lexical or LexicalEncoder()
        self._section_titles = embed_section_titles
        self._store = store
        self._embedder = embedder
        self._blobs = blobs
        self._max_tokens = min(chunk_max_tokens, embedder.chunk_token_limit)
        self._overlap = min(chunk_overlap_tokens, self._max_tokens // 2)

    def index_document(self, document_id: str) -> IndexOutcome:
        document = self._registry.get_document_by_id(document_id)
        if document is None:
            return IndexOutcome(document_id, "skipped")
        job = self._registry.start_job(
            kind="index", collection_id=document.collection_id, document_id=document.id
        )
        self._registry.set_document_status(document.id, DocumentStatus.PROCESSING)
        try:
            count = self._index(document)
        except BackendError:
            # The store or DB is down: retryable, so leave the document queued.
            self._registry.set_document_status(document.id, DocumentStatus.QUEUED)
            self._registry.finish_job(job.id, status="retry")
            raise
        except RagError as exc:
            return self._fail(document, job.id, exc.message)
        except Exception as exc:
            log.exception("indexing %s (%s) failed", document.filename, document.id)
            return self._fail(document, job.id, f"{type(exc).__name__}: {exc}")
        if self._registry.get_document_by_id(document.id) is None:
            # Deleted while it was being indexed: take back what was written.
            self._store.delete_document(document.collection_id, document.id)
            self._registry.finish_job(job.id, status="cancelled")
            return IndexOutcome(document.id, "skipped")
        self._registry.set_document_status(document.id, DocumentStatus.INDEXED, chunk_count=count)
        self._registry.finish_job(job.id, status="succeeded")
        return IndexOutcome(document.id, "indexed", chunks=count)

    def _fail(self, document: DocumentRecord, job_id: str, reason: str) -> IndexOutcome:
        self._registry.set_document_status(document.id, DocumentStatus.FAILED, error=reason, chunk_count=0)
        self._registry.finish_job(job_id, status="failed", error=reason)
        self._store.delete_document(document.collection_id, document.id)
        return IndexOutcome(document.id, "failed", error=reason)

    def chunk(self, document: DocumentRecord) -> list[Chunk]:
        path = self._blobs.path(document.content_hash)
        if not path.is_file():
            raise RagError(f"the stored original of {document.filename} is missing")
        blocks = parse_file(path, document.filename)
        return chunk_blocks(
            blocks,
            count_tokens=self._embedder.count_tokens,
            max_tokens=self._max_tokens,
            overlap_tokens=self._overlap,
        )

    def _index(self, document: DocumentRecord) -> int:
        chunks = self.chunk(document)
        self._store.ensure_collection(document.collection_id, self._embedder.dimension)
        for start in range(0, len(chunks), _UPSERT_BATCH):
            batch = chunks[start : start + _UPSERT_BATCH]
            texts = [self.indexed_text(c) for c in batch]
            vectors = self._embedder.embed(texts)
            self._store.upsert(
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
                    for c, t, v in zip(batch, texts, vectors, strict=True)
                ],
            )
        # A re-index that produced fewer chunks leaves no stale tail behind.
        self._store.delete_chunks_from(document.collection_id, document.id, len(chunks))
        return len(chunks)


    def indexed_text(self, chunk: Chunk) -> str:
        """What is embedded and indexed lexically for a chunk (the stored and
        returned text stays the chunk's own): its section title in front, unless
        the chunk already starts with it, so a passage deep in a section keeps
        the subject its heading names."""
        if not self._section_titles or not chunk.section or chunk.text.startswith(chunk.section):
            return chunk.text
        return f"{chunk.section}\n{chunk.text}"
