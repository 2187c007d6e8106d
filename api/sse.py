"""Server-Sent Events: turning the service's answer events into an HTTP stream.

The first event is pulled before the response starts, so that errors raised
before any output (unknown collection, a full queue: 404, 429) are ordinary
HTTP errors; an error after that ends the stream with an ``error`` event.
Starlette cancels the stream when the client disconnects, which closes the
event iterator and so stops the generation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from api.errors import error_body
from rag.answering import AnswerEvent
from rag.errors import RagError

__all__ = ["TextFrames", "event_stream", "sse"]

log = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data: Any, event: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


class TextFrames:
    """``sse(data)`` for a stream's text events, where only one string of
    ``data`` changes from event to event (a chunk's delta): the bytes around it
    are rendered once, and each event encodes just its text. A stream sends one
    event per token, so this is the per-token cost of the API process."""

    _MARK = "\x00text-frame-mark\x00"

    def __init__(self, build: Callable[[str], Any], event: str | None = None) -> None:
        whole = sse(build(self._MARK), event)
        mark = json.dumps(self._MARK, ensure_ascii=False).encode()
        if whole.count(mark) != 1:
            raise ValueError("the text must appear once in the event")
        self._head, self._tail = whole.split(mark)

    def __call__(self, text: str) -> bytes:
        return self._head + json.dumps(text, ensure_ascii=False).encode() + self._tail


async def event_stream(
    events: AsyncIterator[AnswerEvent],
    render: Callable[[AnswerEvent], list[bytes]],
    *,
    tail: bytes = b"",
    error_event: str | None = "error",
) -> StreamingResponse:
    """A streaming response of ``render(event)`` for each event. Raises what the
    iterator raises before its first event."""
    try:
        first = await anext(events)
    except BaseException:
        await events.aclose()  # type: ignore[attr-defined]
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            for chunk in render(first):
                yield chunk
            async for event in events:
                for chunk in render(event):
                    yield chunk
            if tail:
                yield tail
        except RagError as exc:
            log.warning("stream ended by %s: %s", type(exc).__name__, exc.message)
            yield sse(error_body(exc.code, exc.message), error_event)
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)
