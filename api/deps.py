"""Dependencies that hand the process's objects to the routes."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from rag.reindex import ReindexService
from rag.service import RagService
from runtime import Runtime

__all__ = ["ReindexDep", "RuntimeDep", "ServiceDep"]


def get_runtime(request: Request) -> Runtime:
    return cast(Runtime, request.app.state.runtime)


def get_service(request: Request) -> RagService:
    return get_runtime(request).service


def get_reindex(request: Request) -> ReindexService:
    return get_runtime(request).reindex


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ServiceDep = Annotated[RagService, Depends(get_service)]
ReindexDep = Annotated[ReindexService, Depends(get_reindex)]
