"""The shared embedding queue: batches across documents, order, errors, cancel."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from ingest.batching import EmbedBatcher


class FakeEmbedder:
    """Vectors that name their text; the first call blocks until released, so
    requests pile up behind it as they do behind a busy model."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.fail_on: str | None = None

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.entered.set()
        self.release.wait(timeout=10)
        self.calls.append(list(texts))
        if self.fail_on in texts:
            raise RuntimeError("model failed")
        return [[float(len(t)), float(t.count("x"))] for t in texts]


def _batcher(max_texts: int = 8) -> tuple[EmbedBatcher, FakeEmbedder]:
    fake = FakeEmbedder()
    return EmbedBatcher(fake, max_texts=max_texts), fake  # type: ignore[arg-type]


def test_requests_of_several_documents_share_a_batch() -> None:
    batcher, fake = _batcher(max_texts=8)
    first = batcher.submit(["a"])
    assert fake.entered.wait(5)  # the model is busy with the first request
    doc1 = batcher.submit(["x", "xx", "xxx"])
    doc2 = batcher.submit(["yy", "y"])
    doc3 = batcher.submit(["z"] * 4)  # does not fit beside the two: next batch
    fake.release.set()
    assert first.result(5) == [[1.0, 0.0]]
    assert doc1.result(5) == [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]
    assert doc2.result(5) == [[2.0, 0.0], [1.0, 0.0]]
    assert doc3.result(5) == [[1.0, 0.0]] * 4
    assert fake.calls == [["a"], ["x", "xx", "xxx", "yy", "y"], ["z"] * 4]
    assert (batcher.batches, batcher.texts) == (3, 10)
    batcher.close()


def test_many_threads_get_their_own_vectors() -> None:
    batcher, fake = _batcher(max_texts=64)
    blocker = batcher.submit(["a"])
    assert fake.entered.wait(5)  # the model is busy: the threads' requests queue behind it
    futures: dict[int, Any] = {}
    texts_of = {n: ["x" * n + "-" * i for i in range(n % 7 + 1)] for n in range(40)}

    def document(n: int) -> None:
        futures[n] = batcher.submit(texts_of[n])

    threads = [threading.Thread(target=document, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    fake.release.set()
    blocker.result(5)
    assert len(futures) == 40
    for n, future in futures.items():
        assert future.result(5) == [[float(len(t)), float(n)] for t in texts_of[n]]
    assert batcher.batches < 40  # the queued requests were coalesced
    batcher.close()


def test_a_failed_batch_fails_each_of_its_requests_and_the_queue_goes_on() -> None:
    batcher, fake = _batcher()
    fake.fail_on = "bad"
    blocker = batcher.submit(["a"])
    assert fake.entered.wait(5)
    failing = [batcher.submit(["bad"]), batcher.submit(["ok"])]
    fake.release.set()
    blocker.result(5)
    for future in failing:
        with pytest.raises(RuntimeError, match="model failed"):
            future.result(5)
    fake.fail_on = None
    assert batcher.embed(["after"]) == [[5.0, 0.0]]
    batcher.close()


def test_cancelled_requests_are_not_embedded() -> None:
    batcher, fake = _batcher()
    blocker = batcher.submit(["a"])
    assert fake.entered.wait(5)
    dropped = batcher.submit(["dropped"])
    kept = batcher.submit(["kept"])
    assert dropped.cancel()
    fake.release.set()
    assert kept.result(5) == [[4.0, 0.0]]
    blocker.result(5)
    assert ["dropped"] not in fake.calls and all("dropped" not in call for call in fake.calls)
    batcher.close()


def test_empty_request_and_closed_queue() -> None:
    batcher, _ = _batcher()
    assert batcher.embed([]) == []
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(["late"])
