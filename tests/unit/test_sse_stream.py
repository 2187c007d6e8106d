"""api/sse.py's ``event_stream`` as the ASGI server sees it: one write per
event, and the last event (``done``) sent with the stream's tail and the
response's end in one message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from api.sse import event_stream
from rag.answering import Answer, AnswerDelta, AnswerDone, AnswerEvent, AnswerSources


def _render(event: AnswerEvent) -> list[bytes]:
    if isinstance(event, AnswerSources):
        return []
    if isinstance(event, AnswerDelta):
        return [b"role;", f"text {event.text};".encode()] if event.text == "first" else [f"text {event.text};".encode()]
    return [b"finish;", b"usage;"]


async def _messages(events: list[AnswerEvent], tail: bytes) -> list[dict[str, Any]]:
    async def iterate() -> AsyncIterator[AnswerEvent]:
        for event in events:
            yield event

    response = await event_stream(iterate(), _render, tail=tail)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client never leaves
        raise AssertionError

    await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)
    return sent


def _bodies(sent: list[dict[str, Any]]) -> list[tuple[bytes, bool]]:
    assert sent[0]["type"] == "http.response.start"
    return [(m["body"], m["more_body"]) for m in sent[1:]]


def test_each_event_is_one_write_and_done_ends_the_response_with_the_tail() -> None:
    done = AnswerDone(Answer(answer="first second", sources=[], grounded=False))
    events: list[AnswerEvent] = [AnswerSources([], False), AnswerDelta("first"), AnswerDelta("second"), done]
    assert _bodies(asyncio.run(_messages(events, b"[DONE]"))) == [
        (b"role;text first;", True),
        (b"text second;", True),
        (b"finish;usage;[DONE]", False),
    ]


def test_a_stream_without_done_still_gets_its_tail_and_its_end() -> None:
    assert _bodies(asyncio.run(_messages([AnswerDelta("first")], b"[DONE]"))) == [
        (b"role;text first;", True),
        (b"[DONE]", True),
        (b"", False),
    ]
