"""The model process answers the parent's calls (tokenize, detokenize,
token_text) on threads of its own: each answer, or its failure, goes to the
outbox under the call's id."""

from __future__ import annotations

import queue
from typing import Any

from rag.generation.child import _answer


def test_a_call_is_answered_or_fails_under_its_id() -> None:
    outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()

    def broken(_: Any) -> Any:
        raise ValueError("no vocabulary")

    calls = {"tokenize": lambda text: [ord(c) for c in text], "detokenize": broken}
    _answer(outbox, calls, 7, "tokenize", "ab")
    _answer(outbox, calls, 8, "detokenize", [1])
    _answer(outbox, calls, 9, "unknown", None)
    assert outbox.get_nowait() == ("reply", 7, [97, 98])
    assert outbox.get_nowait() == ("fail", 8, "detokenize: no vocabulary")
    kind, call_id, message = outbox.get_nowait()  # type: ignore[misc]
    assert (kind, call_id) == ("fail", 9) and "unknown" in message
