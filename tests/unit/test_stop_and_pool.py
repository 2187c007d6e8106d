from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from rag.errors import BusyError
from rag.generation import ModelPool
from rag.generation.llama import LlamaModel
from rag.generation.stops import StopMatcher


def run_matcher(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    m = StopMatcher(stops)
    out = []
    for p in pieces:
        text, hit = m.feed(p)
        out.append(text)
        if hit:
            return "".join(out), True
    out.append(m.flush())
    return "".join(out), False


def test_stop_string_split_across_pieces_is_never_emitted() -> None:
    assert run_matcher(["<end_of_turn>"], ["Paris", " is", "<end_", "of_turn>", "x"]) == ("Paris is", True)
    assert run_matcher(["\n"], ["1957", "\n", "more"]) == ("1957", True)


def test_text_without_stop_is_emitted_whole() -> None:
    assert run_matcher(["<end_of_turn>"], ["a <", "b", " c"]) == ("a <b c", False)


def test_pool_refuses_beyond_its_queue() -> None:
    async def scenario() -> list[Any]:
        pool = ModelPool([cast(LlamaModel, object()), cast(LlamaModel, object())], queue_size=1)
        gate = asyncio.Event()

        async def job() -> str:
            async with pool.acquire():
                await gate.wait()
            return "done"

        tasks = [asyncio.create_task(job()) for _ in range(3)]  # 2 running, 1 waiting
        for _ in range(1000):  # until the third waits for a slot
            if pool.waiting == 1:
                break
            await asyncio.sleep(0)
        assert pool.waiting == 1
        with pytest.raises(BusyError) as info:
            async with pool.acquire():
                pass
        assert info.value.retry_after >= 1
        gate.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(scenario()) == ["done", "done", "done"]
