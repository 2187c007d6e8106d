from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import ServiceDep
from api.schemas import AskRequest, AskResponse, SearchRequest, SearchResponse, SourcePublic
from api.sse import event_stream, sse
from rag.service import AnswerDelta, AnswerDone, AnswerEvent, AnswerSources

router = APIRouter(prefix="/v1/collections/{name}", tags=["query"])


@router.post("/search", response_model=SearchResponse)
async def search(name: str, body: SearchRequest, service: ServiceDep) -> SearchResponse:
    hits = await run_in_threadpool(service.search, name, body.query, body.top_k)
    return SearchResponse(results=[SourcePublic.of(h) for h in hits])


@router.post(
    "/ask",
    response_model=AskResponse,
    responses={429: {}, 200: {"content": {"text/event-stream": {}}}},
)
async def ask(name: str, body: AskRequest, service: ServiceDep) -> AskResponse | StreamingResponse:
    if body.stream:
        events = service.ask_stream(name, body.question, top_k=body.top_k, max_tokens=body.max_tokens)
        return await event_stream(events, _ask_event)
    answer = await service.ask(name, body.question, top_k=body.top_k, max_tokens=body.max_tokens)
    return AskResponse.of(answer)


def _ask_event(event: AnswerEvent) -> list[bytes]:
    if isinstance(event, AnswerSources):
        sources = [SourcePublic.of(s).model_dump(mode="json") for s in event.sources]
        return [sse({"grounded": event.grounded, "sources": sources}, "sources")]
    if isinstance(event, AnswerDelta):
        return [sse({"text": event.text}, "delta")]
    assert isinstance(event, AnswerDone)
    done = AskResponse.of(event.answer).model_dump(mode="json", exclude={"sources", "grounded"})
    return [sse(done, "done")]
