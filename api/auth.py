"""The door: every request but the open ones carries a valid API key.

``AuthMiddleware`` authenticates before the route (and before any body is
read): no key or a wrong one is 401 on every path, whatever the route. The
caller's :class:`~rag.auth.Principal` is left in ``request.state.principal``;
each route then declares the role it needs on its collection with one of the
dependencies below (``ReadScope``, ``WriteScope``, ``AdminScope``,
``GlobalAdmin``, ``AnyKey``). A test walks the routes and fails on one that
declares none.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_body, status_for
from rag.auth import ALL_ACCESS, KeyAuthority, Principal, Role
from rag.errors import AuthenticationError, RagError

__all__ = [
    "DOCS_PATHS",
    "AdminScope",
    "AnyKey",
    "AuthMiddleware",
    "GlobalAdmin",
    "PrincipalDep",
    "ReadScope",
    "WriteScope",
    "is_open_path",
]

# Say nothing about collections, or are the web page's own files (which hold no data).
_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/favicon.ico"})
_OPEN_PREFIXES = ("/static/",)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def is_open_path(path: str, *, docs_open: bool) -> bool:
    return path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES) or (docs_open and path in DOCS_PATHS)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


class AuthMiddleware:
    """``authority()`` returns the process's :class:`KeyAuthority` (built in the
    lifespan), or None when authentication is off."""

    def __init__(self, app: ASGIApp, *, enabled: bool, docs_open: bool) -> None:
        self.app = app
        self.enabled = enabled
        self.docs_open = docs_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if not self.enabled:
            state["principal"] = ALL_ACCESS
        elif not is_open_path(scope["path"], docs_open=self.docs_open):
            authority: KeyAuthority = scope["app"].state.auth
            key = _bearer(scope)
            try:
                # A key checked moments ago needs no registry read, so no thread-pool hop:
                # in a burst each hop puts a request behind every other one's parsing.
                state["principal"] = authority.recall(key) or await run_in_threadpool(authority.authenticate, key)
            except RagError as exc:
                await _refuse(send, exc)
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, exc: RagError) -> None:
    status = status_for(exc)
    headers = [(b"content-type", b"application/json")]
    if isinstance(exc, AuthenticationError):
        headers.append((b"www-authenticate", b"Bearer"))
    body = json.dumps(error_body(exc.code, exc.message)).encode()
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def get_principal(request: Request) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # an open path reached a route that needs a caller: never by design
        raise AuthenticationError("an API key is required: send 'Authorization: Bearer <key>'")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]

# The scope checks below are ``async``: they only compare scopes, and a plain
# ``def`` would cost a thread-pool hop per request (api/deps.py).


def _needs(role: Role) -> Any:
    async def check(name: str, principal: PrincipalDep) -> Principal:
        principal.check(role, name)
        return principal

    check.auth_role = role  # type: ignore[attr-defined]  # read by the test that walks the routes
    return Depends(check)


async def _global_admin(principal: PrincipalDep) -> Principal:
    principal.check_admin()
    return principal


async def _any_key(principal: PrincipalDep) -> Principal:
    return principal


_global_admin.auth_role = "admin:*"  # type: ignore[attr-defined]
_any_key.auth_role = "any"  # type: ignore[attr-defined]

# Route dependencies: ``dependencies=[ReadScope]`` or a parameter ``principal: ... = ReadScope``.
ReadScope: Any = _needs(Role.READ)
WriteScope: Any = _needs(Role.WRITE)
AdminScope: Any = _needs(Role.ADMIN)
GlobalAdmin: Any = Depends(_global_admin)
AnyKey: Any = Depends(_any_key)
