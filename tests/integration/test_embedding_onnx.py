"""The ONNX Runtime embedding backend against the PyTorch one, on the bundled model.

The export runs here, from the bundled weights (no download), into a temporary
cache; a second load reuses the file, and a process that loads it from the
cache never imports torch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rag.embedder import Embedder, auto_query_device, resolve_embedding_model
from rag.errors import ConfigurationError
from rag.settings import BUNDLED_EMBEDDING_MODEL

REPO_ROOT = Path(__file__).resolve().parents[2]

TEXTS = [
    "The vault access code for the PDF archive is ZEBRA-4471.",
    "Super Bowl 50 was an American football game to determine the champion of the NFL for the 2015 season.",
    "short",
    "Chloroplasts are organelles that conduct photosynthesis. " * 40,  # longer than the model's 256 tokens
    "",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def torch_embedder() -> Embedder:
    return Embedder(BUNDLED_EMBEDDING_MODEL, device="cpu")


def _cosines(a: list[list[float]], b: list[list[float]]) -> list[float]:
    return [sum(x * y for x, y in zip(u, v, strict=True)) for u, v in zip(a, b, strict=True)]


# int8: 0.979 was seen for the empty text on a CPU with AVX2 but no VNNI (other kernels)
@pytest.mark.parametrize(("backend", "floor"), [("onnx", 0.99999), ("onnx-int8", 0.97)])
def test_same_vectors_as_pytorch(backend: str, floor: float, cache: Path, torch_embedder: Embedder) -> None:
    onnx = Embedder(BUNDLED_EMBEDDING_MODEL, backend=backend, onnx_cache=cache, batch_size=2)  # type: ignore[arg-type]
    assert (onnx.dimension, onnx.max_seq_length, onnx.chunk_token_limit) == (
        torch_embedder.dimension,
        torch_embedder.max_seq_length,
        torch_embedder.chunk_token_limit,
    )
    assert onnx.name == torch_embedder.name and onnx.model_id == torch_embedder.model_id
    vectors = onnx.embed(TEXTS)
    assert min(_cosines(vectors, torch_embedder.embed(TEXTS))) >= floor
    assert all(abs(sum(x * x for x in v) - 1) < 1e-4 for v in vectors)  # normalised
    alone = onnx.embed_query(TEXTS[1])
    if backend == "onnx":  # batch-independent
        assert alone == pytest.approx(vectors[1], abs=1e-5)
    else:  # int8 activations are quantised per batch: close, not equal
        assert _cosines([alone], [vectors[1]])[0] >= 0.99
    for text in TEXTS:
        assert onnx.count_tokens(text) == torch_embedder.count_tokens(text)


def test_batching_and_parallel_runs_do_not_change_the_vectors(cache: Path) -> None:
    """Texts are sorted by token count, cut into batches and run on several
    threads at once: each text's vector is still the one it gets alone, in the
    caller's order."""
    onnx = Embedder(BUNDLED_EMBEDDING_MODEL, backend="onnx", onnx_cache=cache, batch_size=2, threads=3)
    texts = [f"{i}: " + " ".join(["word"] * (i * 37 % 300)) for i in range(20)] + TEXTS
    together = onnx.embed(texts)
    for text, vector in zip(texts, together, strict=True):
        assert onnx.embed_query(text) == pytest.approx(vector, abs=1e-5)


def test_a_few_texts_are_spread_over_the_threads(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each ONNX run has one thread: 15 questions in one batch ran on one core.
    onnx = Embedder(BUNDLED_EMBEDDING_MODEL, backend="onnx", onnx_cache=cache, batch_size=32, threads=4)
    backend = onnx._onnx
    runs: list[int] = []
    run = backend._run
    monkeypatch.setattr(backend, "_run", lambda encodings: runs.append(len(encodings)) or run(encodings))
    questions = [f"Which river did expedition {i} cross?" for i in range(15)]
    vectors = onnx.embed(questions)
    assert sorted(runs) == [3, 4, 4, 4]
    assert vectors[7] == pytest.approx(onnx.embed_query(questions[7]), abs=1e-5)
    runs.clear()
    onnx.embed([f"chunk {i}" for i in range(200)])
    assert max(runs) == 32  # many texts: batches of batch_size as before
    # Concurrent searches' questions: as many runs side by side as threads, the rest coalesced.
    torch = Embedder(BUNDLED_EMBEDDING_MODEL, backend="torch")
    assert (onnx.runs_at_once, torch.runs_at_once) == (4, 1)


def test_export_is_cached(cache: Path) -> None:
    Embedder(BUNDLED_EMBEDDING_MODEL, backend="onnx", onnx_cache=cache)
    (exported,) = cache.glob("*/model.onnx")
    stamp = exported.stat().st_mtime_ns
    Embedder(BUNDLED_EMBEDDING_MODEL, backend="onnx", onnx_cache=cache)
    assert exported.stat().st_mtime_ns == stamp
    assert not list(cache.glob("*/*.partial"))


def test_loading_from_the_cache_needs_no_torch(cache: Path) -> None:
    Embedder(BUNDLED_EMBEDDING_MODEL, backend="onnx", onnx_cache=cache)  # exported before
    code = (
        "import json, sys; from pathlib import Path; from rag.embedder import Embedder;"
        f"e = Embedder({BUNDLED_EMBEDDING_MODEL!r}, backend='onnx', onnx_cache=Path({str(cache)!r}));"
        "v = e.embed(['hello world']);"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'dim': len(v[0])}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(result.stdout.splitlines()[-1]) == {"torch": False, "dim": 384}


def test_model_with_extra_modules_is_refused(tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Dense", "type": "sentence_transformers.models.Dense"},
            ]
        )
    )
    with pytest.raises(ConfigurationError, match="Dense"):
        Embedder(str(tmp_path), backend="onnx", onnx_cache=tmp_path / "cache")


def test_the_api_process_runs_without_torch(cache: Path, tmp_path: Path) -> None:
    """With the onnx backend (export cached) the service's process answers a
    search without importing torch: parsing runs in the parse sandbox's own
    processes, and nothing else in it needs torch (no re-ranker configured)."""
    Embedder(BUNDLED_EMBEDDING_MODEL, backend="onnx", onnx_cache=cache)
    (tmp_path / "data" / "models").mkdir(parents=True)
    shutil.copytree(cache, tmp_path / "data" / "models" / "onnx")
    code = (
        "import sys; from pathlib import Path\n"
        "from fastapi.testclient import TestClient\n"
        "from api.app import create_app\n"
        "from rag.settings import Settings\n"
        f"s = Settings(_env_file=None, data_dir=Path({str(tmp_path / 'data')!r}), llm_load=False,"
        " embedded_worker=False, embedding_backend='onnx', auth_enabled=False)\n"
        "with TestClient(create_app(s, role='serve')) as client:\n"
        "    assert client.post('/v1/collections', json={'name': 'c'}).status_code == 201\n"
        "    assert client.post('/v1/collections/c/search', json={'query': 'hello'}).status_code == 200\n"
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["False", "False"]


def test_questions_go_to_a_copy_on_the_query_device(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RAG_EMBEDDING_QUERY_DEVICE: chunks are embedded where the embedder runs,
    questions by a second copy of the model on the query device, with the
    backend resolved there (auto: ONNX Runtime on the CPU). This machine has no
    GPU, so the embedder's own CPU plays one here (taken for another kind of
    device)."""
    import rag.embedder

    monkeypatch.setattr(rag.embedder, "_device_kind", lambda device: "gpu" if device == "cpu" else device)
    embedder = Embedder(BUNDLED_EMBEDDING_MODEL, device="cpu", backend="torch", onnx_cache=cache, query_device="cpu:0")
    assert (embedder.device, embedder.backend) == ("cpu", "torch")
    assert embedder.query_device == "cpu" and embedder.for_queries is not None
    assert embedder.query_backend == "torch"  # torch configured: the copy keeps it
    questions = embedder.embed_queries(TEXTS[:3])
    assert min(_cosines(questions, embedder.embed(TEXTS[:3]))) >= 0.99999


def test_auto_puts_questions_on_the_cpu_beside_a_gpu(cache: Path) -> None:
    assert (auto_query_device("cuda:0"), auto_query_device("cuda"), auto_query_device("cpu"),
            auto_query_device("mps")) == ("cpu", "cpu", None, None)
    # Without a GPU here: no copy.
    embedder = Embedder(BUNDLED_EMBEDDING_MODEL, device="cpu", backend="onnx", onnx_cache=cache, query_device="auto")
    assert embedder.for_queries is None


def test_no_copy_on_the_same_device(cache: Path) -> None:
    embedder = Embedder(BUNDLED_EMBEDDING_MODEL, device="cpu", backend="onnx", onnx_cache=cache, query_device="cpu")
    assert (embedder.query_device, embedder.query_backend) == ("cpu", "onnx")
    assert embedder.embed_queries(["hello"]) == embedder.embed(["hello"])


def test_weights_stored_as_fp16_export_as_fp32(tmp_path: Path, torch_embedder: Embedder) -> None:
    # The device's MiniLM is stored as fp16 (half the bytes to carry); its
    # export made a graph ONNX Runtime refused to load.
    import torch
    from safetensors.torch import load_file, save_file

    source = resolve_embedding_model(BUNDLED_EMBEDDING_MODEL)
    half = tmp_path / "minilm-fp16"
    shutil.copytree(source, half)
    weights = load_file(str(half / "model.safetensors"))
    save_file({k: v.to(torch.float16) for k, v in weights.items()}, str(half / "model.safetensors"))
    onnx = Embedder(str(half), backend="onnx", onnx_cache=tmp_path / "cache")
    assert min(_cosines(onnx.embed(TEXTS), torch_embedder.embed(TEXTS))) >= 0.999
