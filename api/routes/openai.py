"""OpenAI-compatible endpoints, so that OpenAI clients and tools talk to the
service unchanged: the base model answers plainly, ``rag/<collection>`` answers
from that collection's documents."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.auth import AnyKey, PrincipalDep
from api.deps import RuntimeDep, ServiceDep
from api.openai_schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    EmbeddingItem,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ModelCard,
    ModelList,
    OpenAIUsage,
    chunk,
)
from api.schemas import GroundingPublic, SourcePublic
from api.sse import TextFrames, event_stream, sse
from rag.answering import Answer, AnswerDelta, AnswerDone, AnswerEvent, AnswerSources
from rag.auth import Role
from rag.errors import NotFoundError
from rag.generation import Sampling
from rag.options import AskOptions
from rag.service import COLLECTION_MODEL_PREFIX

router = APIRouter(prefix="/v1", tags=["openai"])

_STARTED = int(time.time())


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


@router.get("/models", response_model=ModelList, dependencies=[AnyKey])
async def list_models(service: ServiceDep, principal: PrincipalDep) -> ModelList:
    """The base model, the embedding model, and ``rag/<collection>`` for each collection this key may read."""
    ids = await run_in_threadpool(service.model_ids)
    prefix = COLLECTION_MODEL_PREFIX
    visible = [i for i in ids if not i.startswith(prefix) or principal.can_see(i[len(prefix) :])]
    return ModelList(data=[ModelCard(id=i, created=_STARTED, owned_by="rag") for i in visible])


@router.post("/chat/completions", response_model=ChatCompletion, responses={404: {}, 429: {}}, dependencies=[AnyKey])
async def chat_completions(
    body: ChatCompletionRequest, service: ServiceDep, principal: PrincipalDep
) -> ChatCompletion | StreamingResponse:
    if body.model.startswith(COLLECTION_MODEL_PREFIX):
        principal.check(Role.READ, body.model[len(COLLECTION_MODEL_PREFIX) :])
    messages = [(m.role, m.text()) for m in body.messages]
    max_tokens = body.max_completion_tokens or body.max_tokens
    sampling = (
        Sampling(temperature=body.temperature, top_p=body.top_p or 1.0, seed=body.seed) if body.temperature else None
    )
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    grounded = body.model.startswith(COLLECTION_MODEL_PREFIX)
    if not body.stream:
        answer = await service.chat(body.model, messages, AskOptions(max_tokens=max_tokens, sampling=sampling))
        message = AssistantMessage(content=answer.answer)
        choice = ChatChoice(message=message, finish_reason=_finish(answer.finish_reason))
        return ChatCompletion(
            id=completion_id,
            created=created,
            model=body.model,
            choices=[choice],
            usage=_usage(answer.usage),
            sources=[SourcePublic.of(s) for s in answer.sources] if grounded else None,
            timings={k: round(v, 4) for k, v in answer.timings.items()},
            **_grounding(answer, grounded),
        )
    events = service.chat_stream(
        body.model, messages, AskOptions(max_tokens=max_tokens, sampling=sampling, ignore_eos=body.ignore_eos)
    )

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    state: dict[str, list[SourcePublic] | None] = {"sources": None}
    role_sent = [False]

    def piece(delta: dict[str, str], **extra: Any) -> bytes:
        return sse(chunk(id=completion_id, created=created, model=body.model, delta=delta, **extra))

    content = TextFrames(lambda text: chunk(id=completion_id, created=created, model=body.model,
                                            delta={"content": text}))

    def render(event: AnswerEvent) -> list[bytes]:
        out = []
        if not role_sent[0]:
            role_sent[0] = True
            out.append(piece({"role": "assistant", "content": ""}))
        if isinstance(event, AnswerSources):
            state["sources"] = [SourcePublic.of(s) for s in event.sources]
            return out
        if isinstance(event, AnswerDelta):
            return [*out, content(event.text)]
        assert isinstance(event, AnswerDone)
        extra: dict[str, object] = {}
        if grounded:
            extra["sources"] = [s.model_dump(mode="json") for s in state["sources"] or []]
        extra["timings"] = {k: round(v, 4) for k, v in event.answer.timings.items()}
        extra.update(_grounding(event.answer, grounded))
        if include_usage:
            extra["usage"] = _usage(event.answer.usage).model_dump()
        out.append(piece({}, finish_reason=_finish(event.answer.finish_reason), **extra))
        return out

    return await event_stream(events, render, tail=sse("[DONE]"), error_event=None)


def _grounding(answer: Answer, grounded: bool) -> dict[str, Any]:
    """The extension fields: evidence and abstention for a rag/<collection>
    model, the prompt style for any."""
    if not grounded:
        return {"prompt_style": answer.prompt_style}
    return GroundingPublic.fields_of(answer)


def _usage(usage: dict[str, int]) -> OpenAIUsage:
    return OpenAIUsage(
        prompt_tokens=usage.get("prompt_tokens", 0),
        completion_tokens=usage.get("completion_tokens", 0),
        total_tokens=usage.get("total_tokens", 0),
    )


@router.post("/embeddings", response_model=EmbeddingsResponse, responses={404: {}}, dependencies=[AnyKey])
async def embeddings(body: EmbeddingsRequest, runtime: RuntimeDep, service: ServiceDep) -> EmbeddingsResponse:
    name = service.embedder.name
    if body.model not in (name, runtime.settings.embedding_model):
        raise NotFoundError(f"embedding model {body.model!r} does not exist; this service has {name!r}")
    texts = [body.input] if isinstance(body.input, str) else body.input
    vectors, tokens = await run_in_threadpool(service.embed, texts)
    items = []
    for i, vector in enumerate(vectors):
        value: list[float] | str = vector
        if body.encoding_format == "base64":
            value = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        items.append(EmbeddingItem(index=i, embedding=value))
    return EmbeddingsResponse(data=items, model=name, usage={"prompt_tokens": tokens, "total_tokens": tokens})
