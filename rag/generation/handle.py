"""What every kind of running generation shares (``GenerationHandle``'s
mechanics): the scheduler's ``GenerationJob``, the model process's
``RemoteJob`` and the fast tier's fake job."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

from rag.generation.types import Generation

__all__ = ["FutureHandle"]


class FutureHandle:
    """A future that completes with the ``Generation``, the times its tokens
    came, and a cancellation flag that any thread may set."""

    def __init__(self) -> None:
        self.future: concurrent.futures.Future[Generation] = concurrent.futures.Future()
        self.token_times: list[float] = []  # when each token was sampled (benchmarks)
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def result(self, timeout: float | None = None) -> Generation:
        return self.future.result(timeout)

    async def wait(self) -> Generation:
        return await asyncio.wrap_future(self.future)
