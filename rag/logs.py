"""Logging set-up and the request id that ties one request's log lines together.

``configure_logging`` is called once per process (``rag serve/api/worker/beat``)
from the settings: plain text by default, one JSON object per line with
``RAG_LOG_FORMAT=json``. Every record carries the id of the request it serves:
the HTTP layer sets it from ``X-Request-ID`` (or makes one), the queue sends it
with each task it enqueues (a task header), and the task sets it again in the
worker, so ``grep <id>`` follows an upload from the HTTP call to its last chunk.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

__all__ = [
    "JsonFormatter",
    "LogFormat",
    "RequestIdFilter",
    "configure_logging",
    "current_log_format",
    "current_request_id",
    "new_request_id",
    "request_scope",
    "valid_request_id",
]

LogFormat = Literal["text", "json"]

_request_id: ContextVar[str | None] = ContextVar("rag_request_id", default=None)

# An id from outside is echoed in headers and logs: keep it short and plain.
_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"

# Attributes every LogRecord has; anything else was passed in ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
    "color_message",  # uvicorn's copy of the message with terminal colours
}


def current_request_id() -> str | None:
    return _request_id.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def valid_request_id(value: str | None) -> str | None:
    """``value`` if it may be used as a request id, else None."""
    return value if value is not None and _ID_PATTERN.match(value) else None


@contextmanager
def request_scope(request_id: str | None) -> Iterator[str | None]:
    """Log records made inside carry ``request_id`` (None: no id)."""
    token = _request_id.set(request_id)
    try:
        yield request_id
    finally:
        _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (``-`` when none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id,
    anything passed in ``extra=``, and the exception if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or _request_id.get()
        if request_id and request_id != "-":
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def current_log_format() -> LogFormat:
    """The format this process logs in, for the child processes it starts."""
    json_lines = any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
    return "json" if json_lines else "text"


def configure_logging(fmt: LogFormat = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one that writes ``fmt`` lines to
    ``stream`` (stderr). uvicorn's and Celery's loggers propagate to it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    if fmt == "json":
        # Progress bars (model loading) are not events: keep them out of the lines.
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        # Their own handlers would print a second, unformatted copy.
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
