"""Dependencies that hand the process's objects to the routes.

They are ``async`` because they only read attributes: FastAPI runs a plain
``def`` dependency in its thread pool, a hop there and back per dependency
and request, which a burst of requests waits on in turn (docs/benchmarks.md,
issue 16)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from rag.reindex import ReindexService
from rag.service import RagService
from runtime import Runtime

__all__ = ["ReindexDep", "RuntimeDep", "ServiceDep"]


async def get_runtime(request: Request) -> Runtime:
    return cast(Runtime, request.app.state.runtime)


async def get_service(request: Request) -> RagService:
    return cast(Runtime, request.app.state.runtime).service


async def get_reindex(request: Request) -> ReindexService:
    return cast(Runtime, request.app.state.runtime).reindex


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ServiceDep = Annotated[RagService, Depends(get_service)]
ReindexDep = Annotated[ReindexService, Depends(get_reindex)]
