from __future__ import annotations

import asyncio
import threading

from rag.generation.stream import TextStream


def test_pieces_from_another_thread_arrive_in_order_then_the_stream_ends() -> None:
    async def scenario() -> tuple[list[str], int]:
        stream = TextStream(asyncio.get_running_loop())
        pieces = [f"{i} " for i in range(2000)]

        def produce() -> None:
            for piece in pieces:
                assert stream.push(piece)
            stream.end()

        worker = threading.Thread(target=produce)
        worker.start()
        got = [piece async for piece in stream]
        worker.join()
        return got, len(pieces)

    got, n = asyncio.run(scenario())
    assert "".join(got) == "".join(f"{i} " for i in range(n))
    assert 1 <= len(got) <= n  # joined while the consumer was behind, never split


def test_a_stream_ended_without_text_yields_nothing() -> None:
    async def scenario() -> list[str]:
        stream = TextStream(asyncio.get_running_loop())
        stream.end()
        return [piece async for piece in stream]

    assert asyncio.run(scenario()) == []


def test_a_push_after_the_loop_closed_reports_nobody_listens() -> None:
    loop = asyncio.new_event_loop()
    stream = TextStream(loop)
    loop.close()
    assert stream.push("late") is False
