"""The RAG service: collections, documents, search and grounded answers.

Everything the HTTP layer and the CLI do goes through ``RagService``. It knows
nothing of HTTP; indexing itself runs in the ingestion worker (``ingest/``),
reached through the ``enqueue`` callable handed in at wiring time.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from rag.blobs import BlobStore
from rag.embedder import Embedder, EmbedderSet
from rag.errors import BackendError, InvalidRequestError, RagError, UnsupportedFileTypeError
from rag.llm import Generation, LlamaModel, ModelPool
from rag.prompt import BuiltPrompt, PromptBuilder, ResolvedPromptStyle
from rag.registry import CollectionRecord, DocumentRecord, DocumentStatus, Registry, VersionStatus
from rag.store import ScoredChunk, VectorStore

__all__ = [
    "NO_ANSWER",
    "Answer",
    "CollectionInfo",
    "RagService",
    "SearchHit",
    "Upload",
    "UploadResult",
]

NO_ANSWER = "The documents don't contain an answer to this question."

_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str | None
    stream: BinaryIO


@dataclass(frozen=True)
class UploadResult:
    filename: str
    document: DocumentRecord | None
    duplicate: bool = False
    error: RagError | None = None


@dataclass(frozen=True)
class CollectionInfo:
    collection: CollectionRecord
    documents: int
    chunks: int  # as recorded by the indexer
    points: int  # as counted in the vector store
    by_status: dict[str, int]


@dataclass(frozen=True)
class SearchHit:
    rank: int
    document_id: str
    filename: str
    page: int | None
    section: str | None
    chunk_index: int
    text: str
    score: float


@dataclass(frozen=True)
class Answer:
    answer: str
    sources: list[SearchHit]
    grounded: bool  # False when retrieval found nothing good enough and no generation ran
    usage: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class RagService:
    def __init__(
        self,
        *,
        registry: Registry,
        store: VectorStore,
        embedder: Embedder,
        blobs: BlobStore,
        enqueue: Callable[[str], None],
        is_supported: Callable[[str], bool],
        max_upload_bytes: int,
        score_threshold: float,
        default_top_k: int,
        default_max_tokens: int,
        n_ctx: int,
        pool: ModelPool | None = None,
        prompt_style: ResolvedPromptStyle = "gemma-chat",
        embedders: EmbedderSet | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.embedder = embedder
        self.blobs = blobs
        self._enqueue = enqueue
        self._is_supported = is_supported
        self._max_upload_bytes = max_upload_bytes
        self._threshold = score_threshold
        self._top_k = default_top_k
        self._max_tokens = default_max_tokens
        self._n_ctx = n_ctx
        self.pool = pool
        self.prompt_style: ResolvedPromptStyle = prompt_style
        # Each index version is queried with the model that built it.
        self.embedders = embedders or EmbedderSet(embedder)

    # --- collections ---------------------------------------------------------
    def create_collection(self, name: str) -> CollectionRecord:
        if not _COLLECTION_NAME.match(name):
            raise InvalidRequestError(
                "a collection name is 1-64 letters, digits, '_', '-' or '.', "
                "starting with a letter or digit"
            )
        record = self.registry.create_collection(name)
        self.store.ensure_collection(record.id, self.embedder.dimension)
        self.registry.add_version(
            record.id,
            self.store.aliased_version(record.id) or 1,
            VersionStatus.ACTIVE,
            embedding_model=self.embedder.model_id,
            dimension=self.embedder.dimension,
        )
        return record

    def list_collections(self) -> list[CollectionInfo]:
        return [self._info(c) for c in self.registry.list_collections()]

    def get_collection(self, name: str) -> CollectionInfo:
        return self._info(self.registry.get_collection(name))

    def _info(self, collection: CollectionRecord) -> CollectionInfo:
        stats = self.registry.collection_stats(collection.id)
        by_status = {s.value: stats[s.value] for s in DocumentStatus}
        return CollectionInfo(
            collection=collection,
            documents=stats["documents"],
            chunks=stats["chunks"],
            points=self.store.count(collection.id),
            by_status=by_status,
        )

    def delete_collection(self, name: str) -> None:
        collection = self.registry.get_collection(name)
        documents = self.registry.list_documents(collection.id)
        self.store.drop_collection(collection.id)
        self.registry.delete_collection(collection.id)
        for doc in documents:
            self._drop_blob_if_unused(doc.content_hash)

    # --- documents -----------------------------------------------------------
    def add_documents(self, name: str, uploads: list[Upload]) -> list[UploadResult]:
        """Store and queue each upload. A bad file fails alone: its result carries
        the error and the others go on."""
        collection = self.registry.get_collection(name)
        if not uploads:
            raise InvalidRequestError("no files in the upload (form field 'files')")
        results: list[UploadResult] = []
        for upload in uploads:
            try:
                results.append(self._add_one(collection, upload))
            except (UnsupportedFileTypeError, InvalidRequestError) as exc:
                results.append(UploadResult(filename=upload.filename, document=None, error=exc))
        return results

    def _add_one(self, collection: CollectionRecord, upload: Upload) -> UploadResult:
        filename = _clean_filename(upload.filename)
        if not self._is_supported(filename):
            raise UnsupportedFileTypeError(f"{filename}: unsupported file type")
        digest, size = self.blobs.put(
            upload.stream, max_bytes=self._max_upload_bytes, name=filename
        )
        if size == 0:
            raise InvalidRequestError(f"{filename} is empty")
        record, created = self.registry.add_document(
            collection_id=collection.id,
            filename=filename,
            content_hash=digest,
            size_bytes=size,
            content_type=upload.content_type,
        )
        if created:
            try:
                self._enqueue(record.id)
            except RagError:
                # Not queued means not kept: a retry of the upload starts afresh.
                self.registry.delete_document(record.id)
                self._drop_blob_if_unused(digest)
                raise
        return UploadResult(filename=filename, document=record, duplicate=not created)

    def list_documents(self, name: str) -> list[DocumentRecord]:
        collection = self.registry.get_collection(name)
        return self.registry.list_documents(collection.id)

    def get_document(self, name: str, document_id: str) -> DocumentRecord:
        collection = self.registry.get_collection(name)
        return self.registry.get_document(collection.id, document_id)

    def delete_document(self, name: str, document_id: str) -> None:
        collection = self.registry.get_collection(name)
        document = self.registry.get_document(collection.id, document_id)
        # Registry first: a worker that picks the document up afterwards finds
        # it gone and writes nothing.
        self.registry.delete_document(document.id)
        self.store.delete_document_everywhere(collection.id, document.id)
        self._drop_blob_if_unused(document.content_hash)

    def count_points(self, name: str, document_id: str | None = None) -> int:
        collection = self.registry.get_collection(name)
        return self.store.count(collection.id, document_id)

    def _drop_blob_if_unused(self, digest: str) -> None:
        if self.registry.count_documents_with_hash(digest) == 0:
            self.blobs.delete(digest)

    # --- retrieval -----------------------------------------------------------
    def search(self, name: str, query: str, top_k: int | None = None) -> list[SearchHit]:
        if not query.strip():
            raise InvalidRequestError("the query is empty")
        collection = self.registry.get_collection(name)
        try:
            hits = self.store.search(collection.id, self._embed_query(collection.id, query), top_k or self._top_k)
        except BackendError:
            # A version switch between reading the registry and querying the alias
            # (embedding models of different sizes): once more, with the new model.
            time.sleep(0.1)
            hits = self.store.search(collection.id, self._embed_query(collection.id, query), top_k or self._top_k)
        return [_hit(i, h) for i, h in enumerate(hits, start=1)]

    def _embed_query(self, collection_id: str, query: str) -> list[float]:
        active = self.registry.active_version(collection_id)
        return self.embedders.get(active.embedding_model if active else None).embed_query(query)

    async def ask(
        self,
        name: str,
        question: str,
        *,
        top_k: int | None = None,
        max_tokens: int | None = None,
    ) -> Answer:
        if not question.strip():
            raise InvalidRequestError("the question is empty")
        max_tokens = max_tokens or self._max_tokens
        if max_tokens >= self._n_ctx - 64:
            raise InvalidRequestError(f"max_tokens must be below {self._n_ctx - 64}")
        started = time.perf_counter()
        sources = await asyncio.to_thread(self.search, name, question, top_k)
        retrieved = time.perf_counter()
        timings = {"retrieval_s": retrieved - started}
        if not sources or sources[0].score < self._threshold:
            timings["total_s"] = time.perf_counter() - started
            return Answer(answer=NO_ANSWER, sources=sources, grounded=False, timings=timings)
        if self.pool is None:
            raise RagError("this process was started without a model (RAG_LLM_LOAD=false)")
        async with self.pool.acquire() as model:
            waited = time.perf_counter()
            prompt, generation = await asyncio.to_thread(
                self._generate, model, question, sources, max_tokens
            )
        used = sources[: prompt.passages_used] if prompt.passages_used else sources[:1]
        timings.update(
            queue_s=waited - retrieved,
            time_to_first_token_s=generation.time_to_first_token_s,
            generation_s=generation.total_s,
            total_s=time.perf_counter() - started,
        )
        usage = {
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens,
            "context_passages": prompt.passages_used,
        }
        answer = generation.text or NO_ANSWER
        return Answer(answer=answer, sources=used, grounded=True, usage=usage, timings=timings)


    def _generate(
        self, model: LlamaModel, question: str, sources: list[SearchHit], max_tokens: int
    ) -> tuple[BuiltPrompt, Generation]:
        builder = PromptBuilder(self.prompt_style, model.tokenize, model.detokenize)
        prompt = builder.build(question, [s.text for s in sources], budget=self._n_ctx - max_tokens)
        generation = model.generate(prompt.tokens, max_tokens=max_tokens, stop=prompt.stop)
        return prompt, generation


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
    )


def _clean_filename(name: str) -> str:
    # Keep the base name only: never a path from the client.
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not base:
        raise InvalidRequestError("a file has no name")
    return base[:255]
