"""One embedding queue per model, shared by every document a worker indexes.

The worker indexes several documents at once (``RAG_WORKER_CONCURRENCY``
task threads). Each document's thread parses and chunks on its own, then hands
its chunk texts here and goes on with its upserts while they are embedded. One
thread per embedder takes whatever requests are waiting, from any documents,
and embeds them together in one call of up to ``max_texts`` texts: batches
cross document boundaries, small documents share a batch, and the model (loaded
once per process) is never idle while a document is being parsed.

Parsing (Python, under the GIL and one at a time: see ``ingest.parsing``),
embedding (torch or ONNX Runtime, which release the GIL while they compute) and
upserts therefore overlap; ``bench/ingest.py`` measures how much.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future

from rag.embedder import Embedder

__all__ = ["EmbedBatcher"]

log = logging.getLogger(__name__)

Vectors = list[list[float]]


class EmbedBatcher:
    """Embeds requests of many threads in shared batches; ``submit`` returns a
    future of the request's vectors, in order."""

    def __init__(self, embedder: Embedder, *, max_texts: int = 128) -> None:
        self.embedder = embedder
        self._max_texts = max_texts
        self._pending: deque[tuple[list[str], Future[Vectors]]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.batches = 0  # embed calls made (for tests and the benchmark)
        self.texts = 0

    def submit(self, texts: Sequence[str]) -> Future[Vectors]:
        future: Future[Vectors] = Future()
        if not texts:
            future.set_result([])
            return future
        with self._cond:
            if self._closed:
                raise RuntimeError("the embedding queue is closed")
            self._pending.append((list(texts), future))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"rag-embed-{self.embedder.name}", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return future

    def embed(self, texts: Sequence[str]) -> Vectors:
        return self.submit(texts).result()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _take(self) -> list[tuple[list[str], Future[Vectors]]] | None:
        """Waiting requests, oldest first, up to ``max_texts`` texts (at least one request)."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None
            taken = [self._pending.popleft()]
            count = len(taken[0][0])
            while self._pending and count + len(self._pending[0][0]) <= self._max_texts:
                request = self._pending.popleft()
                taken.append(request)
                count += len(request[0])
            return taken

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            live = [(texts, future) for texts, future in taken if future.set_running_or_notify_cancel()]
            texts = [text for request, _ in live for text in request]
            try:
                vectors = self.embedder.embed(texts)
            except Exception as exc:  # handed to every waiting document
                for _, future in live:
                    future.set_exception(exc)
                continue
            self.batches += 1
            self.texts += len(texts)
            start = 0
            for request, future in live:
                future.set_result(vectors[start : start + len(request)])
                start += len(request)
