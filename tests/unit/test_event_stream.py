"""api/sse.py's ``event_stream``: one write per event while text streams, and
the stream's end (last text, ``done``, the tail, the body's end) in one write,
with nothing lost when the stream fails half way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from api.sse import event_stream, sse
from rag.answering import Answer, AnswerDelta, AnswerDone, AnswerEvent
from rag.errors import BusyError, RagError


def _render(event: AnswerEvent) -> list[bytes]:
    if isinstance(event, AnswerDelta):
        return [sse({"text": event.text}, "delta")]
    if isinstance(event, AnswerDone):
        return [sse({"answer": event.answer.answer}, "done")]
    return []


async def _events(items: list[AnswerEvent | RagError]) -> AsyncIterator[AnswerEvent]:
    for item in items:
        await asyncio.sleep(0)
        if isinstance(item, RagError):
            raise item
        yield item


def _bodies(items: list[AnswerEvent | RagError], tail: bytes = b"") -> list[dict[str, Any]]:
    """The ASGI body messages the response sends for ``items``."""
    sent: list[dict[str, Any]] = []

    async def scenario() -> None:
        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            raise AssertionError("not read under ASGI 2.4")

        response = await event_stream(_events(items), _render, tail=tail)
        await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)

    asyncio.run(scenario())
    assert sent[0]["type"] == "http.response.start"
    return sent[1:]


DONE = AnswerDone(Answer(answer="a b c", sources=[], grounded=False))


def test_text_goes_out_as_it_comes_and_the_end_in_one_write() -> None:
    items: list[AnswerEvent | RagError] = [AnswerDelta("a"), AnswerDelta(" b"), AnswerDelta(" c", last=True), DONE]
    bodies = _bodies(items, tail=sse("[DONE]"))
    assert [b["body"] for b in bodies] == [
        sse({"text": "a"}, "delta"),
        sse({"text": " b"}, "delta"),
        sse({"text": " c"}, "delta") + sse({"answer": "a b c"}, "done") + sse("[DONE]"),
    ]
    assert [b["more_body"] for b in bodies] == [True, True, False]


def test_text_not_known_to_be_last_is_not_held() -> None:
    bodies = _bodies([AnswerDelta("a"), AnswerDelta(" b"), DONE])
    assert [b["body"] for b in bodies] == [
        sse({"text": "a"}, "delta"), sse({"text": " b"}, "delta"), sse({"answer": "a b c"}, "done")
    ]
    assert bodies[-1]["more_body"] is False


def test_a_failure_after_the_last_text_loses_nothing_and_sends_no_tail() -> None:
    items: list[AnswerEvent | RagError] = [AnswerDelta("a"), AnswerDelta(" b", last=True), BusyError("gone")]
    bodies = _bodies(items, tail=sse("[DONE]"))
    assert [b["more_body"] for b in bodies] == [True, False]
    last = bodies[-1]["body"]
    assert last.startswith(sse({"text": " b"}, "delta") + b"event: error\n")
    assert b"gone" in last and b"[DONE]" not in last
