"""Guards that act on the raw request, before any route reads it.

- ``BodyLimitMiddleware``: a body larger than ``RAG_MAX_REQUEST_BYTES`` is
  answered 413 at once: before reading anything when Content-Length declares
  it, and as soon as the running total passes the limit when the body comes
  chunked (the route is then cut off: its reads fail and whatever it tries to
  send is dropped). The response says ``Connection: close``, so the server
  stops reading the rest.
- ``OriginGuardMiddleware``: a state-changing request (anything but
  GET/HEAD/OPTIONS) that a browser sends from another site is refused with
  403, with or without authentication: that is what stops a web page the user
  visits from posting a form to this service (CSRF). Browsers name the page's
  origin in ``Origin`` (and ``Sec-Fetch-Site``); the service's own page is the
  same origin, and clients that are not browsers send neither.
- CORS (Starlette's middleware) only when ``RAG_CORS_ORIGINS`` lists origins.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body

__all__ = ["BodyLimitMiddleware", "OriginGuardMiddleware", "install_cors"]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class _TooLarge(Exception):
    pass


async def _send_error(send: Send, status: int, code: str, message: str, *, close: bool = False) -> None:
    body = json.dumps(error_body(code, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class BodyLimitMiddleware:
    """``max_bytes`` for a file upload (multipart/form-data), ``max_other_bytes``
    (at most that) for any other body."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_other_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_other_bytes = min(max_bytes, max_other_bytes or max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = (_header(scope, b"content-type") or "").lower().startswith("multipart/form-data")
        limit, setting = (self.max_bytes, "RAG_MAX_REQUEST_BYTES") if upload else (
            self.max_other_bytes, "RAG_MAX_JSON_BYTES")
        message = f"the request body is larger than the {limit:,}-byte limit ({setting})"
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _send_error(send, 400, "invalid_request", "Content-Length is not a number", close=True)
                return
            if int(declared) > limit:
                await _send_error(send, 413, "request_too_large", message, close=True)
                return

        received = 0
        refused = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                raise _TooLarge
            item = await receive()
            if item["type"] == "http.request":
                received += len(item.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await _send_error(send, 413, "request_too_large", message, close=True)
                    raise _TooLarge
            return item

        async def guarded_send(item: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 is the answer; the route's own is dropped
            if item["type"] == "http.response.start":
                started = True
            await send(item)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            pass
        except Exception:
            if not refused:
                raise


def _same_origin(origin: str, scope: Scope) -> bool:
    host = _header(scope, b"host")
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


class OriginGuardMiddleware:
    def __init__(self, app: ASGIApp, *, allowed_origins: list[str]) -> None:
        self.app = app
        self.allowed = frozenset(o.rstrip("/") for o in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in _SAFE_METHODS and not self._allowed(scope):
            await _send_error(
                send,
                403,
                "cross_origin_refused",
                "a request from another web site may not change anything here (set RAG_CORS_ORIGINS to allow one)",
            )
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        origin = _header(scope, b"origin")
        if origin is not None:
            return origin != "null" and (origin.rstrip("/") in self.allowed or _same_origin(origin, scope))
        # No Origin: not a browser, or an old one; a browser that names the site says so.
        return _header(scope, b"sec-fetch-site") not in ("cross-site", "same-site")


def install_cors(app: FastAPI, origins: list[str]) -> None:
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
        )
