"""RAG_EMBEDDING_BACKEND=auto (the default): ONNX Runtime where the embedder
runs on the CPU, PyTorch where a GPU would run it (docs/benchmarks.md)."""

from __future__ import annotations

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


def test_auto_is_the_default(tmp_path: object) -> None:
    assert Settings(_env_file=None, data_dir=tmp_path).embedding_backend == "auto"  # type: ignore[call-arg]
