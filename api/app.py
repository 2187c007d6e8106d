"""The FastAPI app factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api.errors import install_error_handlers
from api.observability import ObservabilityMiddleware, state_collector
from api.observability import router as metrics_router
from api.routes import collections, documents, health, keys, openai, query, reindex
from api.security import install_guards, open_door
from api.web import install_web
from rag.settings import Settings
from runtime import Parts, Role, Runtime, build_runtime

__all__ = ["create_app"]


def create_app(
    settings: Settings, *, role: Role = "serve", runtime: Runtime | None = None, parts: Parts | None = None
) -> FastAPI:
    """``role='serve'`` runs the embedded worker in this process (unless the
    settings turn it off); ``role='api'`` serves HTTP only, for split mode.
    ``runtime``: one built already (kept open at shutdown); ``parts``: outside
    systems to use instead of those the settings name (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # rag's blocking calls (asyncio.to_thread) go to the loop's default executor.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(settings.blocking_threads, thread_name_prefix="rag-blocking")
        )
        rt = runtime if runtime is not None else await run_in_threadpool(build_runtime, settings, role, parts)
        app.state.runtime = rt
        await run_in_threadpool(open_door, app, settings, rt.registry)
        app.state.metrics_collector = state_collector(rt)
        inline = parts is not None and parts.inline_tasks
        if role == "serve" and not settings.is_split_mode and settings.embedded_worker and not inline:
            await run_in_threadpool(rt.start_worker)
        try:
            yield
        finally:
            if runtime is None:
                await run_in_threadpool(rt.close)

    app = FastAPI(
        title="rag",
        summary="Upload documents, ask grounded questions, get answers with their sources.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if settings.docs != "off" else None,
        redoc_url="/redoc" if settings.docs != "off" else None,
        openapi_url="/openapi.json" if settings.docs != "off" else None,
    )
    install_error_handlers(app)
    for module in (health, collections, documents, query, reindex, openai, keys):
        app.include_router(module.router)
    app.include_router(metrics_router)
    install_web(app)
    install_guards(app, settings)
    app.add_middleware(ObservabilityMiddleware)
    return app
