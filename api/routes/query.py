from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.deps import ServiceDep
from api.schemas import AskRequest, AskResponse, EvaluationRequest, SearchRequest, SearchResponse, SourcePublic
from rag.evaluation import QAItem, evaluate, render_table

router = APIRouter(prefix="/v1/collections/{name}", tags=["query"])


@router.post("/search", response_model=SearchResponse)
async def search(name: str, body: SearchRequest, service: ServiceDep) -> SearchResponse:
    hits, timings = await run_in_threadpool(
        lambda: service.search_timed(
            name,
            body.query,
            body.top_k,
            mode=body.mode,
            where=body.filter.to_filter() if body.filter else None,
            rerank=body.rerank,
        )
    )
    return SearchResponse(
        results=[SourcePublic.of(h) for h in hits], timings={k: round(v, 6) for k, v in timings.items()}
    )


@router.post("/ask", response_model=AskResponse, responses={429: {}})
async def ask(name: str, body: AskRequest, service: ServiceDep) -> AskResponse:
    answer = await service.ask(
        name,
        body.question,
        top_k=body.top_k,
        max_tokens=body.max_tokens,
        mode=body.mode,
        where=body.filter.to_filter() if body.filter else None,
        rerank=body.rerank,
    )
    return AskResponse.of(answer)


@router.post(
    "/evaluations",
    summary="Run a QA set against the collection: answer-recall@k, MRR, abstention, EM/F1, latency",
)
async def evaluations(name: str, body: EvaluationRequest, service: ServiceDep) -> JSONResponse:
    report = await evaluate(
        service,
        name,
        [QAItem(question=i.question, answers=i.answers, document=i.document) for i in body.items],
        mode=body.mode,
        ks=body.k,
        generate_sample=body.generate_sample,
        latency_sample=body.latency_sample,
        seed=body.seed,
        rerank=body.rerank,
    )
    data = report.as_dict()
    return JSONResponse({**data, "table": render_table(data)})
