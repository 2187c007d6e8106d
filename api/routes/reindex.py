"""Re-indexing: the folder a collection mirrors, cron schedules, runs (started
now or by the schedule), index versions, rollback and golden questions."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from api.auth import AdminScope, ReadScope
from api.deps import ReindexDep
from api.schemas import (
    FolderBinding,
    FolderPublic,
    GoldenPublic,
    GoldenUploaded,
    ReindexRequest,
    RunPublic,
    ScheduleCreate,
    SchedulePublic,
    ScheduleUpdate,
    VersionPublic,
)
from rag.errors import InvalidRequestError

router = APIRouter(prefix="/v1/collections/{name}", tags=["re-indexing"])


@router.get("/source", response_model=FolderPublic, dependencies=[AdminScope])
async def get_source(name: str, reindex: ReindexDep) -> FolderPublic:
    return FolderPublic(folder=await run_in_threadpool(reindex.get_folder, name))


@router.put(
    "/source",
    response_model=FolderPublic,
    summary="Bind the collection to a server-side folder",
    dependencies=[AdminScope],
)
async def bind_source(name: str, body: FolderBinding, reindex: ReindexDep) -> FolderPublic:
    return FolderPublic(folder=await run_in_threadpool(reindex.bind_folder, name, body.folder))


@router.delete("/source", status_code=204, dependencies=[AdminScope])
async def unbind_source(name: str, reindex: ReindexDep) -> Response:
    await run_in_threadpool(reindex.unbind_folder, name)
    return Response(status_code=204)


@router.post("/schedules", status_code=201, response_model=SchedulePublic, dependencies=[AdminScope])
async def create_schedule(name: str, body: ScheduleCreate, reindex: ReindexDep) -> SchedulePublic:
    record = await run_in_threadpool(
        lambda: reindex.create_schedule(
            name, cron=body.cron, timezone=body.timezone, kind=body.kind, enabled=body.enabled
        )
    )
    return SchedulePublic.of(record)


@router.get("/schedules", response_model=list[SchedulePublic], dependencies=[AdminScope])
async def list_schedules(name: str, reindex: ReindexDep) -> list[SchedulePublic]:
    return [SchedulePublic.of(s) for s in await run_in_threadpool(reindex.list_schedules, name)]


@router.get("/schedules/{schedule_id}", response_model=SchedulePublic, dependencies=[AdminScope])
async def get_schedule(name: str, schedule_id: str, reindex: ReindexDep) -> SchedulePublic:
    return SchedulePublic.of(await run_in_threadpool(reindex.get_schedule, name, schedule_id))


@router.patch("/schedules/{schedule_id}", response_model=SchedulePublic, dependencies=[AdminScope])
async def update_schedule(name: str, schedule_id: str, body: ScheduleUpdate, reindex: ReindexDep) -> SchedulePublic:
    record = await run_in_threadpool(
        lambda: reindex.update_schedule(
            name, schedule_id, cron=body.cron, timezone=body.timezone, kind=body.kind, enabled=body.enabled
        )
    )
    return SchedulePublic.of(record)


@router.delete("/schedules/{schedule_id}", status_code=204, dependencies=[AdminScope])
async def delete_schedule(name: str, schedule_id: str, reindex: ReindexDep) -> Response:
    await run_in_threadpool(reindex.delete_schedule, name, schedule_id)
    return Response(status_code=204)


@router.post("/reindex", status_code=202, response_model=RunPublic, responses={409: {}}, dependencies=[AdminScope])
async def reindex_now(name: str, body: ReindexRequest, reindex: ReindexDep) -> RunPublic:
    return RunPublic.of(await run_in_threadpool(reindex.request_run, name, body.kind))


@router.get("/runs", response_model=list[RunPublic], dependencies=[ReadScope])
async def list_runs(name: str, reindex: ReindexDep) -> list[RunPublic]:
    return [RunPublic.of(r) for r in await run_in_threadpool(reindex.list_runs, name)]


@router.get("/runs/{run_id}", response_model=RunPublic, dependencies=[ReadScope])
async def get_run(name: str, run_id: str, reindex: ReindexDep) -> RunPublic:
    return RunPublic.of(await run_in_threadpool(reindex.get_run, name, run_id))


@router.get("/versions", response_model=list[VersionPublic], dependencies=[ReadScope])
async def list_versions(name: str, reindex: ReindexDep) -> list[VersionPublic]:
    return [VersionPublic.of(v) for v in await run_in_threadpool(reindex.list_versions, name)]


@router.post("/rollback", response_model=RunPublic, responses={409: {}}, dependencies=[AdminScope])
async def rollback(name: str, reindex: ReindexDep) -> RunPublic:
    return RunPublic.of(await run_in_threadpool(reindex.rollback, name))


@router.put(
    "/golden",
    response_model=GoldenUploaded,
    summary="Replace the golden questions (JSON lines: question, answers, document)",
    openapi_extra={"requestBody": {"content": {"application/jsonl": {"schema": {"type": "string"}}}}},
    dependencies=[AdminScope],
)
async def put_golden(name: str, request: Request, reindex: ReindexDep) -> GoldenUploaded:
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError("the golden questions must be UTF-8 JSON lines") from exc
    return GoldenUploaded(questions=await run_in_threadpool(reindex.set_golden, name, text))


@router.get("/golden", response_model=list[GoldenPublic], dependencies=[AdminScope])
async def get_golden(name: str, reindex: ReindexDep) -> list[GoldenPublic]:
    return [GoldenPublic.of(g) for g in await run_in_threadpool(reindex.list_golden, name)]
