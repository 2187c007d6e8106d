"""Per-request request id, access log line and latency metric (one ASGI middleware),
and the ``/metrics`` route.

The request id comes from ``X-Request-ID`` when the client sends a usable one,
else a new one is made; it is returned in the response's ``X-Request-ID`` and
set for every log record made while the request is served (and, through the
queue's task headers, in the worker that indexes what it uploaded).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import GlobalAdmin
from rag import metrics
from rag.logs import new_request_id, request_scope, valid_request_id

__all__ = ["REQUEST_ID_HEADER", "ObservabilityMiddleware", "router", "state_collector"]

log = logging.getLogger("rag.http")

REQUEST_ID_HEADER = "X-Request-ID"
_HEADER_KEY = REQUEST_ID_HEADER.lower().encode()


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/v1/collections/{name}/ask``), so
    the metric has one series per route, not per collection name."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    raw = str(scope.get("path", ""))
    if raw.startswith("/static/"):
        return "/static"
    return "unmatched"


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == _HEADER_KEY), None)
        request_id = valid_request_id(given) or new_request_id()
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != _HEADER_KEY]
                headers.append((_HEADER_KEY, request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        with request_scope(request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                seconds = time.perf_counter() - started
                route = route_template(scope)
                metrics.observe_request(scope.get("method", ""), route, status, seconds)
                if route not in ("/metrics", "/healthz", "/readyz", "/static"):
                    log.info(
                        "%s %s %d %.3fs",
                        scope.get("method", ""),
                        scope.get("path", ""),
                        status,
                        seconds,
                        extra={"http_method": scope.get("method", ""), "route": route, "status": status,
                               "duration_s": round(seconds, 6)},
                    )


def state_collector(runtime: Any) -> metrics.StateCollector:
    """Scrape-time gauges of this process: documents by status (from the
    registry, so in split mode too), and its model pool if it has one."""
    registry = runtime.registry

    def document_counts() -> dict[str, int]:
        totals: dict[str, int] = {}
        with registry.unit_of_work() as uow:
            for collection in uow.collections.list_all():
                for key, n in uow.collections.stats(collection.id).items():
                    if key not in ("documents", "chunks"):
                        totals[key] = totals.get(key, 0) + n
        return totals

    return metrics.StateCollector(document_counts=document_counts, pool=lambda: getattr(runtime, "pool", None))


router = APIRouter(tags=["health"])


@router.get(
    "/metrics", summary="Prometheus metrics of this process", response_class=Response, dependencies=[GlobalAdmin]
)
async def prometheus_metrics(request: Request) -> Response:
    collector: Any = getattr(request.app.state, "metrics_collector", None)
    body = await run_in_threadpool(metrics.render, collector)
    return Response(body, media_type=metrics.CONTENT_TYPE)
