from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.deps import ServiceDep
from api.schemas import AskRequest, AskResponse, SearchRequest, SearchResponse, SourcePublic

router = APIRouter(prefix="/v1/collections/{name}", tags=["query"])


@router.post("/search", response_model=SearchResponse)
async def search(name: str, body: SearchRequest, service: ServiceDep) -> SearchResponse:
    hits = await run_in_threadpool(service.search, name, body.query, body.top_k)
    return SearchResponse(results=[SourcePublic.of(h) for h in hits])


@router.post("/ask", response_model=AskResponse, responses={429: {}})
async def ask(name: str, body: AskRequest, service: ServiceDep) -> AskResponse:
    answer = await service.ask(name, body.question, top_k=body.top_k, max_tokens=body.max_tokens)
    return AskResponse.of(answer)
