"""The model process answers the parent's calls (tokenize, detokenize,
token_text) on threads of its own: each answer, or its failure, goes to the
outbox under the call's id. Requests it reads back to back reach the
scheduler together (``_Burst``)."""

from __future__ import annotations

import queue
from typing import Any

import pytest

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


class _Model:
    n_batch = 2048

    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


def test_a_burst_read_off_the_socket_wakes_the_scheduler_once_the_socket_is_empty() -> None:
    from multiprocessing import Pipe

    from rag.generation.child import _Burst

    here, there = Pipe()
    model = _Model()
    burst = _Burst(here, model)
    burst.before_reading()
    assert model.wakes == 0  # nothing queued: nothing to wake for
    for i in range(3):
        there.send(("submit_text", i))
    for _ in range(3):
        here.recv()
        burst.queued(500)
        burst.before_reading()
    assert model.wakes == 1  # not while the next request was there to read; at once after the last
    burst.queued(0)  # a refused request queues nothing
    burst.before_reading()
    assert model.wakes == 1


def test_a_step_s_worth_of_prompt_or_the_hold_time_wakes_it_with_more_to_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from multiprocessing import Pipe

    from rag.generation.child import _Burst

    here, there = Pipe()
    model = _Model()
    burst = _Burst(here, model)
    there.send(("more",))
    burst.queued(1500)
    burst.before_reading()
    assert model.wakes == 0
    burst.queued(600)  # 2,100 tokens: a step's worth (n_batch 2,048)
    assert model.wakes == 1
    monkeypatch.setattr(_Burst, "HOLD_S", 0.0)
    burst.queued(10)
    burst.before_reading()  # a message waits, but the hold is over
    assert model.wakes == 2
