"""api/sse.py's ``TextFrames``: a stream's text events rendered around the
one string that changes are byte for byte what ``sse`` renders."""

from __future__ import annotations

import pytest

from api.openai_schemas import chunk
from api.sse import TextFrames, sse

TEXTS = ["", " Paris", 'He said "no".', "back\\slash", "line\nbreak\ttab", "é中文🙂", "\x00\x1f", "}]}"]


def _chunk(text: str) -> dict[str, object]:
    return chunk(id="chatcmpl-1", created=1700000000, model="rag/pets", delta={"content": text})


@pytest.mark.parametrize("event", [None, "delta"])
def test_text_frames_are_what_sse_renders(event: str | None) -> None:
    frames = TextFrames(_chunk, event)
    for text in TEXTS:
        assert frames(text) == sse(_chunk(text), event)


def test_ask_delta_frames_too() -> None:
    frames = TextFrames(lambda text: {"text": text}, "delta")
    for text in TEXTS:
        assert frames(text) == sse({"text": text}, "delta")


def test_the_text_must_appear_once() -> None:
    with pytest.raises(ValueError):
        TextFrames(lambda text: {"a": text, "b": text})
    with pytest.raises(ValueError):
        TextFrames(lambda text: {"a": "fixed"})
