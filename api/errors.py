"""The one place where the project's errors become HTTP responses.

Every error body has one shape: ``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.errors import (
    AlreadyExistsError,
    AuthenticationError,
    BackendError,
    BusyError,
    ConfigurationError,
    ConflictError,
    FileTooLargeError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RagError,
    RequestTooLargeError,
    UnsupportedFileTypeError,
)

__all__ = ["error_body", "install_error_handlers", "status_for"]

log = logging.getLogger(__name__)

# Most specific first.
_STATUS: tuple[tuple[type[RagError], int], ...] = (
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (AlreadyExistsError, 409),
    (ConflictError, 409),
    (UnsupportedFileTypeError, 415),
    (FileTooLargeError, 413),
    (RequestTooLargeError, 413),
    (InvalidRequestError, 422),
    (BusyError, 429),
    (BackendError, 503),
    (ConfigurationError, 500),
)


def status_for(exc: RagError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RagError)
    async def _rag_error(_request: Request, exc: RagError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            log.error("%s: %s", type(exc).__name__, exc.message, exc_info=exc)
        headers = None
        if isinstance(exc, BusyError):
            headers = {"Retry-After": str(exc.retry_after)}
        elif isinstance(exc, AuthenticationError):
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(error_body(exc.code, exc.message), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse(error_body("invalid_request", "; ".join(parts)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)
