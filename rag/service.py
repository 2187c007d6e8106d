"""The RAG service: collections, documents, search and grounded answers.

Everything the HTTP layer and the CLI do goes through ``RagService``. It knows
nothing of HTTP; indexing itself runs in the ingestion worker (``ingest/``),
reached through the ``enqueue`` callable handed in at wiring time.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from rag import metrics
from rag.blobs import BlobStore
from rag.embedder import Embedder
from rag.errors import InvalidRequestError, NotFoundError, RagError, UnsupportedFileTypeError
from rag.filenames import clean_filename, escape_name
from rag.generation import Generation, ModelPool, Sampling, TextModel
from rag.generation.stream import TextStream
from rag.grounding import Grounding, GroundingJudge
from rag.prompt import BuiltPrompt, PromptBuilder, ResolvedPromptStyle, Turn
from rag.registry import CollectionRecord, Database, DocumentRecord, DocumentStatus, VersionStatus
from rag.retrieval import Retriever, SearchHit
from rag.settings import SearchMode, Settings
from rag.store import MetadataValue, SearchFilter, VectorStore

__all__ = [
    "COLLECTION_MODEL_PREFIX",
    "NO_ANSWER",
    "Answer",
    "AnswerDelta",
    "AnswerDone",
    "AnswerEvent",
    "AnswerSources",
    "Answering",
    "CollectionInfo",
    "Intake",
    "Library",
    "RagService",
    "SearchHit",
    "Upload",
    "UploadResult",
    "check_metadata",
]

NO_ANSWER = "The documents don't contain an answer to this question."

_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
COLLECTION_MODEL_PREFIX = "rag/"  # OpenAI-style model id of a collection: rag/<name>
MAX_EMBED_INPUTS = 256
_METADATA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


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
class Answer:
    answer: str
    sources: list[SearchHit]
    # False when the service abstains: retrieval found nothing good enough (no
    # generation ran), or the generated answer is judged not to stand in the
    # passages (``draft`` holds it, ``reason`` says why).
    grounded: bool
    usage: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    finish_reason: str = "stop"  # "stop", "length" or "cancelled"
    grounding: Grounding | None = None  # evidence, supported, abstention score (answers from passages)
    reason: str | None = None  # why it abstained
    draft: str | None = None  # the generated answer that was withheld
    prompt_style: str | None = None  # the prompt format generation used


@dataclass(frozen=True)
class AnswerSources:
    """First event of a streamed answer: the passages the prompt holds."""

    sources: list[SearchHit]
    grounded: bool


@dataclass(frozen=True)
class AnswerDelta:
    text: str


@dataclass(frozen=True)
class AnswerDone:
    answer: Answer


AnswerEvent = AnswerSources | AnswerDelta | AnswerDone


@dataclass(frozen=True)
class Library:
    """Where collections and documents live."""

    registry: Database
    store: VectorStore
    blobs: BlobStore
    embedder: Embedder  # the configured model: new collections' vectors, /v1/embeddings


@dataclass(frozen=True)
class Intake:
    """How an upload gets to the ingestion worker."""

    enqueue: Callable[[str], None]
    is_supported: Callable[[str], bool]
    max_upload_bytes: int


@dataclass(frozen=True)
class Answering:
    """Generation: the model pool (None in a process started without a model),
    its prompt format and limits, and the similarity below which ``ask``
    abstains without generating."""

    pool: ModelPool | None
    prompt_style: ResolvedPromptStyle
    n_ctx: int
    max_tokens: int
    score_threshold: float
    # Evidence for answers and abstention after generation (rag/grounding.py).
    grounding: GroundingJudge = field(default_factory=GroundingJudge)

    @classmethod
    def from_settings(
        cls, settings: Settings, pool: ModelPool | None, prompt_style: ResolvedPromptStyle
    ) -> Answering:
        return cls(
            pool=pool,
            prompt_style=prompt_style,
            n_ctx=settings.llm_n_ctx,
            max_tokens=settings.max_tokens,
            score_threshold=settings.score_threshold,
            grounding=GroundingJudge(settings.abstain_threshold),
        )


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
    def search(
        self,
        name: str,
        query: str,
        top_k: int | None = None,
        *,
        mode: SearchMode | None = None,
        where: SearchFilter | None = None,
        rerank: bool | None = None,
    ) -> list[SearchHit]:
        """The ``top_k`` best chunks for ``query`` (see ``Retriever.search``)."""
        return self.search_timed(name, query, top_k, mode=mode, where=where, rerank=rerank)[0]

    def search_timed(
        self,
        name: str,
        query: str,
        top_k: int | None = None,
        *,
        mode: SearchMode | None = None,
        where: SearchFilter | None = None,
        rerank: bool | None = None,
    ) -> tuple[list[SearchHit], dict[str, float]]:
        """``search``, plus the seconds spent in each part (embed_s, store_s,
        rerank_s) and in all (total_s)."""
        if not query.strip():
            raise InvalidRequestError("the query is empty")
        collection = self._collection(name)
        return self.retriever.search(collection.id, query, top_k, mode=mode, where=where, rerank=rerank)

    def search_batch(
        self,
        name: str,
        queries: list[str],
        top_k: int | None = None,
        *,
        mode: SearchMode | None = None,
        where: SearchFilter | None = None,
        rerank: bool | None = None,
    ) -> list[list[SearchHit]]:
        """``search`` for many queries at once (embedded in batches)."""
        if any(not q.strip() for q in queries):
            raise InvalidRequestError("a query is empty")
        collection = self._collection(name)
        return self.retriever.search_many(collection.id, queries, top_k, mode=mode, where=where, rerank=rerank)

    def abstains(self, sources: list[SearchHit]) -> bool:
        """Whether ``ask`` answers "not in the documents" without generating:
        nothing found, or no source as similar to the question as the threshold
        asks (cosine; in lexical mode, where nothing is embedded, finding any
        matching term is enough)."""
        if not sources:
            return True
        similarities = [s.similarity for s in sources if s.similarity is not None]
        return bool(similarities) and max(similarities) < self.answering.score_threshold

    async def ask(
        self,
        name: str,
        question: str,
        *,
        top_k: int | None = None,
        max_tokens: int | None = None,
        mode: SearchMode | None = None,
        where: SearchFilter | None = None,
        rerank: bool | None = None,
    ) -> Answer:
        events = self.ask_stream(
            name, question, top_k=top_k, max_tokens=max_tokens, mode=mode, where=where, rerank=rerank
        )
        return await _final_answer(events)

    async def ask_stream(
        self,
        name: str,
        question: str,
        *,
        top_k: int | None = None,
        max_tokens: int | None = None,
        history: Sequence[Turn] = (),
        mode: SearchMode | None = None,
        where: SearchFilter | None = None,
        rerank: bool | None = None,
        sampling: Sampling | None = None,
        ignore_eos: bool = False,
    ) -> AsyncIterator[AnswerEvent]:
        """The answer as it is generated: ``AnswerSources``, then ``AnswerDelta``
        pieces, then ``AnswerDone``. Closing the iterator early (client gone)
        stops the generation. Greedy unless ``sampling``; ``ignore_eos``
        generates ``max_tokens`` tokens (benchmarks)."""
        if not question.strip():
            raise InvalidRequestError("the question is empty")
        max_tokens = self._check_max_tokens(max_tokens)
        started = time.perf_counter()
        sources = await asyncio.to_thread(
            functools.partial(self.search, name, question, top_k, mode=mode, where=where, rerank=rerank)
        )
        timings = {"retrieval_s": time.perf_counter() - started}
        if self.abstains(sources):
            yield AnswerSources(sources=sources, grounded=False)
            yield AnswerDelta(NO_ANSWER)
            timings["total_s"] = time.perf_counter() - started
            reason = "no passage was found" if not sources else "no passage is similar enough to the question"
            yield AnswerDone(
                Answer(answer=NO_ANSWER, sources=sources, grounded=False, timings=timings, reason=reason)
            )
            return
        inner = self._generate_stream(question, sources, max_tokens, history, started, timings, sampling, ignore_eos)
        async with aclosing(inner):  # type: ignore[type-var]
            async for event in inner:
                yield event

    async def chat_stream(
        self,
        model: str,
        messages: Sequence[tuple[str, str]],
        *,
        max_tokens: int | None = None,
        top_k: int | None = None,
        sampling: Sampling | None = None,
        ignore_eos: bool = False,
    ) -> AsyncIterator[AnswerEvent]:
        """An OpenAI-style conversation: ``messages`` are (role, text) pairs,
        the last one the user's question. ``model`` is the base model (no
        retrieval) or ``rag/<collection>`` (grounded in that collection).
        System and developer messages are accepted and left out: the prompt's
        own instructions apply (the bundled base model echoes instructions)."""
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
            inner = self.ask_stream(collection, question, top_k=top_k, max_tokens=max_tokens, history=history,
                                    sampling=sampling, ignore_eos=ignore_eos)
            async with aclosing(inner):  # type: ignore[type-var]
                async for event in inner:
                    yield event
            return
        if self.pool is None or model != self.pool.model_name:
            raise NotFoundError(f"model {model!r} does not exist (see GET /v1/models)")
        max_tokens = self._check_max_tokens(max_tokens)
        started = time.perf_counter()
        inner = self._generate_stream(question, None, max_tokens, history, started, {}, sampling, ignore_eos)
        async with aclosing(inner):  # type: ignore[type-var]
            async for event in inner:
                yield event

    async def chat(
        self,
        model: str,
        messages: Sequence[tuple[str, str]],
        *,
        max_tokens: int | None = None,
        sampling: Sampling | None = None,
    ) -> Answer:
        return await _final_answer(self.chat_stream(model, messages, max_tokens=max_tokens, sampling=sampling))

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
        tokens = sum(self.embedder.count_tokens(t) for t in texts)
        return self.embedder.embed(texts), tokens

    def _check_max_tokens(self, max_tokens: int | None) -> int:
        n_ctx = self.answering.n_ctx
        max_tokens = max_tokens or self.answering.max_tokens
        if max_tokens >= n_ctx - 64:
            raise InvalidRequestError(f"max_tokens must be below {n_ctx - 64}")
        return max_tokens

    async def _generate_stream(
        self,
        question: str,
        sources: list[SearchHit] | None,
        max_tokens: int,
        history: Sequence[Turn],
        started: float,
        timings: dict[str, float],
        sampling: Sampling | None = None,
        ignore_eos: bool = False,
    ) -> AsyncIterator[AnswerEvent]:
        if self.pool is None:
            raise RagError("this process was started without a model (RAG_LLM_LOAD=false)")
        # Pieces that arrive while this task is busy are joined: one loop wake-up each time.
        pieces = TextStream(asyncio.get_running_loop())
        retrieved = time.perf_counter()
        async with self.pool.acquire() as model:
            acquired = time.perf_counter()
            prompt = await asyncio.to_thread(self._build_prompt, model, question, sources, max_tokens, history)
            used: list[SearchHit] = []
            if sources is not None:
                used = sources[: prompt.passages_used] if prompt.passages_used else sources[:1]
                yield AnswerSources(sources=used, grounded=True)
            job = model.submit(prompt.tokens, max_tokens=max_tokens, stop=prompt.stop, on_text=pieces.push,
                               ignore_eog=ignore_eos, sampling=sampling, logprobs=sources is not None)
            job.future.add_done_callback(lambda _: pieces.end())
            try:
                async for piece in pieces:
                    yield AnswerDelta(piece)
                generation: Generation = await job.wait()
            finally:
                job.cancel()  # a no-op once finished; stops it when the client left
        timings.update(
            queue_s=acquired - retrieved + generation.queue_s,
            time_to_first_token_s=generation.time_to_first_token_s,
            generation_s=generation.total_s,
            total_s=time.perf_counter() - started,
        )
        decode_s = generation.total_s - generation.time_to_first_token_s
        if generation.completion_tokens > 1 and decode_s > 0:
            timings["decode_tokens_per_s"] = (generation.completion_tokens - 1) / decode_s
        usage = {
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens,
            "cached_prompt_tokens": generation.cached_tokens,
        }
        if sources is not None:
            usage["context_passages"] = prompt.passages_used
        metrics.observe_generation(timings, usage)
        text = generation.text or (NO_ANSWER if sources is not None else "")
        grounding = reason = draft = None
        if sources is not None:
            # After the stream: a client showing deltas learns from `done`
            # that the answer was withheld (grounded false, reason).
            grounding = self.answering.grounding.assess(
                question, generation.text, [(s.rank, s.text) for s in used], generation.token_logprobs
            )
            if grounding.abstain:
                reason, draft, text = grounding.reason, generation.text, NO_ANSWER
        yield AnswerDone(
            Answer(
                answer=text,
                sources=used,
                grounded=sources is not None and reason is None,
                usage=usage,
                timings=timings,
                finish_reason=generation.finish_reason,
                grounding=grounding,
                reason=reason,
                draft=draft,
                prompt_style=self.answering.prompt_style,
            )
        )

    def _build_prompt(
        self,
        model: TextModel,
        question: str,
        sources: list[SearchHit] | None,
        max_tokens: int,
        history: Sequence[Turn],
    ) -> BuiltPrompt:
        builder = PromptBuilder(
            self.answering.prompt_style,
            model.tokenize,
            model.detokenize,
            history=history,
            retrieval=sources is not None,
        )
        passages = [s.text for s in sources] if sources is not None else []
        return builder.build(question, passages, budget=self.answering.n_ctx - max_tokens)


async def _final_answer(events: AsyncIterator[AnswerEvent]) -> Answer:
    async with aclosing(events):  # type: ignore[type-var]
        async for event in events:
            if isinstance(event, AnswerDone):
                return event.answer
    raise RagError("the answer stream ended without an answer")


def check_metadata(metadata: dict[str, Any]) -> dict[str, MetadataValue | list[MetadataValue]]:
    """Upload metadata as the store keeps it, or InvalidRequestError saying why not."""
    if not isinstance(metadata, dict):
        raise InvalidRequestError("metadata must be a JSON object")
    if len(metadata) > 64:
        raise InvalidRequestError("metadata has more than 64 keys")
    out: dict[str, MetadataValue | list[MetadataValue]] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not _METADATA_KEY.match(key):
            raise InvalidRequestError(
                f"metadata key {key!r}: use 1-64 letters, digits, '_' or '-', starting with a letter or '_'"
            )
        values = value if isinstance(value, list) else [value]
        for v in values:
            if not isinstance(v, str | int | float | bool) or (isinstance(v, str) and len(v) > 1024):
                raise InvalidRequestError(
                    f"metadata {key!r}: values are strings (up to 1024 characters), numbers, "
                    "booleans or lists of them"
                )
        out[key] = list(values) if isinstance(value, list) else value
    return out
