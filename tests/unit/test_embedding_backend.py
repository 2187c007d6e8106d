"""RAG_EMBEDDING_BACKEND=auto (the default): ONNX Runtime where the embedder
runs on the CPU, PyTorch where a GPU would run it (docs/benchmarks.md)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from rag import embedder
from rag.embedder import resolve_embedding_backend
from rag.settings import Settings


@pytest.mark.parametrize("backend", ["torch", "onnx", "onnx-int8"])
@pytest.mark.parametrize("device", [None, "cpu", "cuda"])
def test_an_explicit_backend_is_kept(backend: str, device: str | None) -> None:
    assert resolve_embedding_backend(backend, device) == backend  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("device", "backend"), [("cpu", "onnx"), ("cuda", "torch"), ("cuda:1", "torch"), ("mps", "torch")]
)
def test_auto_follows_an_explicit_device(device: str, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedder, "_gpu_likely", lambda: pytest.fail("the device was given"))
    assert resolve_embedding_backend("auto", device) == backend


@pytest.mark.parametrize(("gpu", "backend"), [(False, "onnx"), (True, "torch")])
def test_auto_without_a_device_looks_for_a_gpu(gpu: bool, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedder, "_gpu_likely", lambda: gpu)
    assert resolve_embedding_backend("auto", None) == backend


def test_auto_is_the_default(tmp_path: Path) -> None:
    assert Settings(_env_file=None, data_dir=tmp_path).embedding_backend == "auto"  # type: ignore[call-arg]


def test_each_process_and_thread_writes_its_own_partial_export(tmp_path: Path) -> None:
    """``rag api`` and ``rag worker`` started at once on one data directory both
    export: neither may write into the other's file before the rename."""
    from rag.embedding_onnx import _partial

    target = tmp_path / "model.onnx"
    names: list[Path] = []
    thread = threading.Thread(target=lambda: names.append(_partial(target)))
    thread.start()
    thread.join()
    names.append(_partial(target))
    assert len(set(names)) == 2
    assert all(n.parent == target.parent and n.name.startswith("model.onnx.") for n in names)


def test_batches_group_texts_of_similar_token_counts() -> None:
    from rag.embedding_onnx import plan_batches

    lengths = [10, 250, 12, 240, 11, 9, 255, 100]
    batches = plan_batches(lengths, batch_size=3, tokens_per_batch=600)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))  # each text once
    for batch in batches:
        assert len(batch) <= 3
        assert max(lengths[i] for i in batch) * len(batch) <= 600 or len(batch) == 1
    # Longest first, and neighbours in length share a batch: [255, 250], [240, 100], [12, 11, 10], [9]
    assert batches == [[6, 1], [3, 7], [2, 4, 0], [5]]


def test_a_text_longer_than_the_token_budget_goes_alone() -> None:
    from rag.embedding_onnx import plan_batches

    assert plan_batches([5000, 3, 4], batch_size=32, tokens_per_batch=2048) == [[0], [2, 1]]
    assert plan_batches([], batch_size=32) == []
