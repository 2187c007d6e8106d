"""``Coalesced`` (rag/embedder.py): concurrent searches' questions embedded in
one call of the embedder, a lone one at once; with room for several runs, as
many side by side."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from rag.embedder import Coalesced


class SlowEmbed:
    """Vectors that name their text; each call holds until ``gate`` is set."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        self.entered.set()
        assert self.gate.wait(10)
        if "bad" in texts:
            raise ValueError("cannot embed")
        return [[float(len(t)), float(ord(t[0]))] for t in texts]


def test_a_lone_call_runs_at_once() -> None:
    fn = SlowEmbed()
    fn.gate.set()
    embed = Coalesced(fn)
    assert embed(["ab", "c"]) == [[2.0, 97.0], [1.0, 99.0]]
    assert fn.calls == [["ab", "c"]]


def test_calls_that_come_while_one_runs_go_together_each_getting_its_own() -> None:
    fn = SlowEmbed()
    embed = Coalesced(fn)
    results: dict[str, list[list[float]]] = {}
    first = threading.Thread(target=lambda: results.update(first=embed(["x"])))
    first.start()
    assert fn.entered.wait(10)  # the first call is in the embedder
    texts = [["one"], ["two", "three"], ["four"], ["five", "six", "seven"]]
    others = [threading.Thread(target=lambda t=t: results.update({t[0]: embed(t)})) for t in texts]
    for t in others:
        t.start()
    deadline = time.monotonic() + 10
    while embed.waiting < len(texts):  # all four wait for the first
        assert time.monotonic() < deadline, "the calls never queued"
        time.sleep(0.005)
    fn.gate.set()
    for t in [first, *others]:
        t.join(10)
    assert fn.calls[0] == ["x"] and len(fn.calls) == 2 and sorted(fn.calls[1]) == sorted(s for t in texts for s in t)
    for t in texts:
        assert results[t[0]] == [[float(len(s)), float(ord(s[0]))] for s in t]
    assert embed.calls == 2


def test_what_the_embedder_raises_reaches_its_batch_and_the_next_call_goes_on() -> None:
    fn = SlowEmbed()
    fn.gate.set()
    embed = Coalesced(fn)
    with pytest.raises(ValueError, match="cannot embed"):
        embed(["bad"])
    assert embed(["ok"]) == [[2.0, 111.0]]


def test_with_room_for_two_runs_a_second_call_runs_beside_the_first_and_the_rest_wait_together() -> None:
    fn = SlowEmbed()
    embed = Coalesced(fn, concurrency=2)
    results: dict[str, list[list[float]]] = {}

    def call(texts: list[str]) -> threading.Thread:
        t = threading.Thread(target=lambda: results.update({texts[0]: embed(texts)}))
        t.start()
        return t

    threads = [call(["a"])]
    deadline = time.monotonic() + 10
    threads.append(call(["bb"]))
    while len(fn.calls) < 2:  # the second runs at once, beside the first, still held
        assert time.monotonic() < deadline, "the second call did not run beside the first"
        time.sleep(0.005)
    threads += [call(["ccc"]), call(["dddd", "e"])]
    while embed.waiting < 2:  # both runs busy: these two wait, then go together
        assert time.monotonic() < deadline, "the calls never queued"
        time.sleep(0.005)
    fn.gate.set()
    for t in threads:
        t.join(10)
    assert sorted(map(sorted, fn.calls)) == [["a"], ["bb"], ["ccc", "dddd", "e"]]
    assert results["dddd"] == [[4.0, 100.0], [1.0, 101.0]] and results["a"] == [[1.0, 97.0]]
    assert embed.calls == 3
