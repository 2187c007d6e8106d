from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from api.auth import AdminScope, AnyKey, PrincipalDep, ReadScope
from api.deps import ServiceDep
from api.schemas import CollectionCreate, CollectionPublic
from rag.auth import Role
from rag.errors import PermissionDeniedError

router = APIRouter(prefix="/v1/collections", tags=["collections"])


@router.post("", status_code=201, response_model=CollectionPublic, dependencies=[AnyKey])
async def create_collection(body: CollectionCreate, service: ServiceDep, principal: PrincipalDep) -> CollectionPublic:
    if not principal.can(Role.ADMIN, body.name):
        raise PermissionDeniedError(f"creating collection {body.name!r} needs the scope admin:{body.name} or admin:*")
    return CollectionPublic.of(await run_in_threadpool(service.create_collection, body.name))


@router.get("", response_model=list[CollectionPublic], dependencies=[AnyKey])
async def list_collections(service: ServiceDep, principal: PrincipalDep) -> list[CollectionPublic]:
    """The collections this key may read."""
    infos = await run_in_threadpool(service.list_collections)
    return [CollectionPublic.of_info(i) for i in infos if principal.can_see(i.collection.name)]


@router.get("/{name}", response_model=CollectionPublic, dependencies=[ReadScope])
async def get_collection(name: str, service: ServiceDep) -> CollectionPublic:
    return CollectionPublic.of_info(await run_in_threadpool(service.get_collection, name))


@router.delete("/{name}", status_code=204, dependencies=[AdminScope])
async def delete_collection(name: str, service: ServiceDep) -> Response:
    await run_in_threadpool(service.delete_collection, name)
    return Response(status_code=204)
