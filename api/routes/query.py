from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.auth import ReadScope
from api.deps import ServiceDep
from api.schemas import AskRequest, AskResponse, EvaluationRequest, SearchRequest, SearchResponse, SourcePublic
from api.sse import TextFrames, event_stream, sse
from rag.answering import AnswerDelta, AnswerDone, AnswerEvent, AnswerSources, final_answer
from rag.evaluation import QAItem, evaluate, render_table

router = APIRouter(prefix="/v1/collections/{name}", tags=["query"])


@router.post("/search", response_model=SearchResponse, dependencies=[ReadScope])
async def search(name: str, body: SearchRequest, service: ServiceDep) -> SearchResponse:
    hits, timings = await run_in_threadpool(service.search_timed, name, body.query, body.options())
    return SearchResponse(
        results=[SourcePublic.of(h) for h in hits], timings={k: round(v, 6) for k, v in timings.items()}
    )


@router.post(
    "/ask",
    response_model=AskResponse,
    responses={429: {}, 200: {"content": {"text/event-stream": {}}}},
    dependencies=[ReadScope],
)
async def ask(name: str, body: AskRequest, service: ServiceDep) -> AskResponse | StreamingResponse:
    events = service.ask_stream(name, body.question, body.options())
    if body.stream:
        return await event_stream(events, _ask_event)
    return AskResponse.of(await final_answer(events))


_DELTA = TextFrames(lambda text: {"text": text}, "delta")


def _ask_event(event: AnswerEvent) -> list[bytes]:
    if isinstance(event, AnswerSources):
        sources = [SourcePublic.of(s).model_dump(mode="json") for s in event.sources]
        return [sse({"grounded": event.grounded, "sources": sources}, "sources")]
    if isinstance(event, AnswerDelta):
        return [_DELTA(event.text)]
    assert isinstance(event, AnswerDone)
    # grounded is final here: the answer may be withheld after generation.
    done = AskResponse.of(event.answer).model_dump(mode="json", exclude={"sources"})
    return [sse(done, "done")]


@router.post(
    "/evaluations",
    summary="Run a QA set against the collection: answer-recall@k, MRR, abstention, EM/F1, latency",
    dependencies=[ReadScope],
)
async def evaluations(name: str, body: EvaluationRequest, service: ServiceDep) -> JSONResponse:
    report = await evaluate(
        service,
        name,
        [QAItem(question=i.question, answers=i.answers, document=i.document) for i in body.items],
        mode=body.mode,
        ks=body.k,
        generate_sample=body.generate_sample,
        generate_unanswerable=body.generate_unanswerable,
        latency_sample=body.latency_sample,
        seed=body.seed,
        rerank=body.rerank,
    )
    data = report.as_dict()
    return JSONResponse({**data, "table": render_table(data)})
