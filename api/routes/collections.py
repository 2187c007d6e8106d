from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from api.deps import ServiceDep
from api.schemas import CollectionCreate, CollectionPublic

router = APIRouter(prefix="/v1/collections", tags=["collections"])


@router.post("", status_code=201, response_model=CollectionPublic)
async def create_collection(body: CollectionCreate, service: ServiceDep) -> CollectionPublic:
    return CollectionPublic.of(await run_in_threadpool(service.create_collection, body.name))


@router.get("", response_model=list[CollectionPublic])
async def list_collections(service: ServiceDep) -> list[CollectionPublic]:
    return [CollectionPublic.of_info(i) for i in await run_in_threadpool(service.list_collections)]


@router.get("/{name}", response_model=CollectionPublic)
async def get_collection(name: str, service: ServiceDep) -> CollectionPublic:
    return CollectionPublic.of_info(await run_in_threadpool(service.get_collection, name))


@router.delete("/{name}", status_code=204)
async def delete_collection(name: str, service: ServiceDep) -> Response:
    await run_in_threadpool(service.delete_collection, name)
    return Response(status_code=204)
