"""``TextStream``: a generation's text, from the thread that produces it (the
scheduler, or a model process's reader) to the asyncio task that serves it.

At 16 streams of a few hundred tokens/s each, one event-loop wake-up per token
and stream (``call_soon_threadsafe`` writes to the loop's self-pipe every time)
kept the API process's event loop busy. Here a piece that arrives while the
consumer has not yet taken the previous ones is appended to them, and the loop
is woken at most once per batch: a consumer keeping up sees every piece as it
comes; one falling behind gets the pieces joined, with no extra wake-ups.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

__all__ = ["TextStream"]


class TextStream:
    """``push`` and ``end`` from any thread; ``async for`` on the loop given."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._parts: list[str] = []
        self._ended = False
        self._wake_pending = False
        self._ready = asyncio.Event()

    def push(self, piece: str) -> bool:
        """Adds text; False when the loop is gone (nobody listens)."""
        return self._put(piece, end=False)

    def end(self) -> None:
        self._put("", end=True)

    def _put(self, piece: str, *, end: bool) -> bool:
        with self._lock:
            if piece:
                self._parts.append(piece)
            self._ended = self._ended or end
            if self._wake_pending:
                return True
            self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the event loop is closed
            return False
        return True

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            await self._ready.wait()
            self._ready.clear()
            with self._lock:
                parts, self._parts = self._parts, []
                ended = self._ended
                self._wake_pending = False
            if parts:
                yield "".join(parts)
            if ended:
                return
