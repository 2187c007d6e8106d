"""The RAG service: collections, documents, search and grounded answers.

Everything the HTTP layer and the CLI do goes through ``RagService``. It knows
nothing of HTTP; indexing itself runs in the ingestion worker (``ingest/``),
reached through the ``enqueue`` callable handed in at wiring time.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from rag.answering import Answer, AnswerEvent, Answering, final_answer
from rag.blobs import BlobStore
from rag.embedder import Embedder
from rag.errors import InvalidRequestError, NotFoundError, RagError, UnsupportedFileTypeError
from rag.filenames import clean_filename, escape_name
from rag.intake import Intake, Upload, UploadResult, check_metadata
from rag.options import AskOptions, SearchOptions
from rag.prompt import Turn
from rag.registry import CollectionRecord, Database, DocumentRecord, DocumentStatus, VersionStatus
from rag.retrieval import Retriever, SearchHit
from rag.settings import SearchMode
from rag.store import MetadataValue, VectorStore

__all__ = [
    "COLLECTION_MODEL_PREFIX",
    "AskOptions",
    "CollectionInfo",
    "Library",
    "RagService",
    "SearchHit",
    "SearchOptions",
]

_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
COLLECTION_MODEL_PREFIX = "rag/"  # OpenAI-style model id of a collection: rag/<name>
MAX_EMBED_INPUTS = 256
# Far more characters than a token of an embedder's vocabulary spans: an input
# is read up to max_seq_length × this many (its tokens counted that far).
EMBED_CHARS_PER_TOKEN = 64


@dataclass(frozen=True)
class CollectionInfo:
    collection: CollectionRecord
    documents: int
    chunks: int  # as recorded by the indexer
    points: int  # as counted in the vector store
    by_status: dict[str, int]


@dataclass(frozen=True)
class Library:
    """Where collections and documents live."""

    registry: Database
    store: VectorStore
    blobs: BlobStore
    embedder: Embedder  # the configured model: new collections' vectors, /v1/embeddings


class RagService:
    def __init__(self, *, library: Library, intake: Intake, retriever: Retriever, answering: Answering) -> None:
        self.library = library
        self.intake = intake
        self.retriever = retriever
        self.answering = answering
        self.registry = library.registry
        self.store = library.store
        self.embedder = library.embedder
        self.pool = answering.pool

    @property
    def search_mode(self) -> SearchMode:
        return self.retriever.mode

    # --- collections ---------------------------------------------------------
    def create_collection(self, name: str) -> CollectionRecord:
        if not _COLLECTION_NAME.match(name):
            raise InvalidRequestError(
                "a collection name is 1-64 letters, digits, '_', '-' or '.', "
                "starting with a letter or digit"
            )
        # One transaction: a collection is never left without its first version,
        # even when the store refuses the collection.
        with self.registry.unit_of_work() as uow:
            record = uow.collections.create(name)
            self.store.ensure_collection(record.id, self.embedder.dimension)
            uow.versions.add(
                record.id,
                self.store.aliased_version(record.id) or 1,
                VersionStatus.ACTIVE,
                embedding_model=self.embedder.model_id,
                dimension=self.embedder.dimension,
            )
        return record

    def list_collections(self) -> list[CollectionInfo]:
        with self.registry.unit_of_work() as uow:
            collections = uow.collections.list_all()
        return [self._info(c) for c in collections]

    def get_collection(self, name: str) -> CollectionInfo:
        return self._info(self._collection(name))

    def _collection(self, name: str) -> CollectionRecord:
        with self.registry.unit_of_work() as uow:
            return uow.collections.get(name)

    def _info(self, collection: CollectionRecord) -> CollectionInfo:
        with self.registry.unit_of_work() as uow:
            stats = uow.collections.stats(collection.id)
        by_status = {s.value: stats[s.value] for s in DocumentStatus}
        return CollectionInfo(
            collection=collection,
            documents=stats["documents"],
            chunks=stats["chunks"],
            points=self.store.count(collection.id),
            by_status=by_status,
        )

    def delete_collection(self, name: str) -> None:
        with self.registry.unit_of_work() as uow:
            collection = uow.collections.get(name)
            documents = uow.documents.list_for(collection.id)
        self.store.drop_collection(collection.id)
        with self.registry.unit_of_work() as uow:
            uow.collections.delete(collection.id)
        for doc in documents:
            self._drop_blob_if_unused(doc.content_hash)

    # --- documents -----------------------------------------------------------
    def add_documents(
        self, name: str, uploads: list[Upload], metadata: dict[str, Any] | None = None
    ) -> list[UploadResult]:
        """Store and queue each upload. A bad file fails alone: its result carries
        the error and the others go on. ``metadata`` (flat: keys to strings,
        numbers, booleans or lists of them) is attached to every file of the
        upload and can be filtered on at search time; an identical re-upload
        keeps the metadata of the first."""
        collection = self._collection(name)
        clean = check_metadata(metadata or {})
        if not uploads:
            raise InvalidRequestError("no files in the upload (form field 'files')")
        results: list[UploadResult] = []
        for upload in uploads:
            try:
                results.append(self._add_one(collection, upload, clean))
            except (UnsupportedFileTypeError, InvalidRequestError) as exc:
                results.append(UploadResult(filename=escape_name(upload.filename), document=None, error=exc))
        return results

    def _add_one(
        self, collection: CollectionRecord, upload: Upload, metadata: dict[str, MetadataValue | list[MetadataValue]]
    ) -> UploadResult:
        clean = clean_filename(upload.filename)
        filename = clean.name
        if not self.intake.is_supported(filename):
            raise UnsupportedFileTypeError(f"{filename}: unsupported file type")
        digest, size = self.library.blobs.put(
            upload.stream, max_bytes=self.intake.max_upload_bytes, name=filename
        )
        if size == 0:
            raise InvalidRequestError(f"{filename} is empty")
        with self.registry.unit_of_work() as uow:
            record, created = uow.documents.add(
                collection_id=collection.id,
                filename=filename,
                content_hash=digest,
                size_bytes=size,
                content_type=upload.content_type,
                metadata=dict(metadata),
                original_filename=clean.original,
            )
        if created:
            try:
                self.intake.enqueue(record.id)
            except RagError:
                # Not queued means not kept: a retry of the upload starts afresh.
                with self.registry.unit_of_work() as uow:
                    uow.documents.delete(record.id)
                self._drop_blob_if_unused(digest)
                raise
        return UploadResult(filename=filename, document=record, duplicate=not created)

    def list_documents(self, name: str) -> list[DocumentRecord]:
        with self.registry.unit_of_work() as uow:
            return uow.documents.list_for(uow.collections.get(name).id)

    def get_document(self, name: str, document_id: str) -> DocumentRecord:
        with self.registry.unit_of_work() as uow:
            return uow.documents.get(uow.collections.get(name).id, document_id)

    def delete_document(self, name: str, document_id: str) -> None:
        with self.registry.unit_of_work() as uow:
            collection = uow.collections.get(name)
            document = uow.documents.get(collection.id, document_id)
        # Registry first: a worker that picks the document up afterwards finds
        # it gone and writes nothing.
        with self.registry.unit_of_work() as uow:
            uow.documents.delete(document.id)
        self.store.delete_document_everywhere(collection.id, document.id)
        self._drop_blob_if_unused(document.content_hash)

    def _drop_blob_if_unused(self, digest: str) -> None:
        with self.registry.unit_of_work() as uow:
            unused = uow.documents.count_with_hash(digest) == 0
        if unused:
            self.library.blobs.delete(digest)

    # --- retrieval -----------------------------------------------------------
    def search(self, name: str, query: str, options: SearchOptions = SearchOptions()) -> list[SearchHit]:
        """The ``top_k`` best chunks for ``query`` (see ``Retriever.search``)."""
        return self.search_timed(name, query, options)[0]

    def search_timed(
        self, name: str, query: str, options: SearchOptions = SearchOptions()
    ) -> tuple[list[SearchHit], dict[str, float]]:
        """``search``, plus the seconds spent in each part (embed_s, store_s,
        rerank_s) and in all (total_s)."""
        if not query.strip():
            raise InvalidRequestError("the query is empty")
        return self.retriever.search(self.retriever.served(name), query, options)

    def search_batch(
        self, name: str, queries: list[str], options: SearchOptions = SearchOptions()
    ) -> list[list[SearchHit]]:
        """``search`` for many queries at once (embedded in batches)."""
        if any(not q.strip() for q in queries):
            raise InvalidRequestError("a query is empty")
        return self.retriever.search_many(self.retriever.served(name), queries, options)

    async def ask(self, name: str, question: str, options: AskOptions = AskOptions()) -> Answer:
        return await final_answer(self.ask_stream(name, question, options))

    async def ask_stream(
        self, name: str, question: str, options: AskOptions = AskOptions(), *, history: Sequence[Turn] = ()
    ) -> AsyncIterator[AnswerEvent]:
        """The answer as it is generated: ``AnswerSources``, then ``AnswerDelta``
        pieces, then ``AnswerDone``. Closing the iterator early (client gone)
        stops the generation."""
        if not question.strip():
            raise InvalidRequestError("the question is empty")
        max_tokens = self.answering.check_max_tokens(options.max_tokens)
        started = time.perf_counter()

        def search() -> tuple[list[SearchHit], dict[str, float]]:
            began = time.perf_counter()
            hits, parts = self.search_timed(name, question, options.search)
            parts["search_s"] = time.perf_counter() - began  # the registry read too
            return hits, parts

        sources, parts = await asyncio.to_thread(search)
        # The search's parts (embed_s, store_s, rerank_s) and its whole in its thread (search_s)
        # beside the whole with the thread hops (retrieval_s).
        timings = {**{k: v for k, v in parts.items() if k != "total_s"}, "retrieval_s": time.perf_counter() - started}
        inner = self.answering.stream(
            question, sources, max_tokens, history, started, timings, options.sampling, options.ignore_eos
        )
        async with aclosing(inner):  # type: ignore[type-var]
            async for event in inner:
                yield event

    async def chat_stream(
        self, model: str, messages: Sequence[tuple[str, str]], options: AskOptions = AskOptions()
    ) -> AsyncIterator[AnswerEvent]:
        """An OpenAI-style conversation: ``messages`` are (role, text) pairs,
        the last one the user's question. ``model`` is the base model (no
        retrieval: ``options.search`` is not used) or ``rag/<collection>``
        (grounded in that collection). System and developer messages are
        accepted and left out: the prompt's own instructions apply (the bundled
        base model echoes instructions)."""
        history: list[Turn] = []
        for role, text in messages:
            if role in ("user", "assistant"):
                history.append(("user" if role == "user" else "assistant", text))
            elif role not in ("system", "developer"):
                raise InvalidRequestError(f"unsupported message role {role!r}")
        if not history or history[-1][0] != "user" or not history[-1][1].strip():
            raise InvalidRequestError("the last message must be a non-empty user message")
        question = history.pop()[1]
        if model.startswith(COLLECTION_MODEL_PREFIX):
            collection = model[len(COLLECTION_MODEL_PREFIX) :]
            inner = self.ask_stream(collection, question, options, history=history)
        else:
            if self.pool is None or model != self.pool.model_name:
                raise NotFoundError(f"model {model!r} does not exist (see GET /v1/models)")
            max_tokens = self.answering.check_max_tokens(options.max_tokens)
            started = time.perf_counter()
            inner = self.answering.stream(
                question, None, max_tokens, history, started, {}, options.sampling, options.ignore_eos
            )
        async with aclosing(inner):  # type: ignore[type-var]
            async for event in inner:
                yield event

    async def chat(self, model: str, messages: Sequence[tuple[str, str]], options: AskOptions = AskOptions()) -> Answer:
        return await final_answer(self.chat_stream(model, messages, options))

    def model_ids(self) -> list[str]:
        """OpenAI-style model ids: the base model, ``rag/<collection>`` for each
        collection, and the embedding model."""
        base = [self.pool.model_name] if self.pool is not None else []
        with self.registry.unit_of_work() as uow:
            collections = [COLLECTION_MODEL_PREFIX + c.name for c in uow.collections.list_all()]
        return [*base, *collections, self.embedder.name]

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """Embeddings of ``texts`` and the tokens they took."""
        if not texts:
            raise InvalidRequestError("no input to embed")
        if len(texts) > MAX_EMBED_INPUTS:
            raise InvalidRequestError(f"at most {MAX_EMBED_INPUTS} inputs per request")
        # The model reads an input's first max_seq_length tokens; its tokenizer
        # went through all of it first (6.5 s for a 5 MB input on the dev VM).
        limit = self.embedder.max_seq_length * EMBED_CHARS_PER_TOKEN
        texts = [t[:limit] for t in texts]
        tokens = sum(self.embedder.count_tokens(t) for t in texts)
        return self.embedder.embed(texts), tokens
