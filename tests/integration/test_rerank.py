"""Optional cross-encoder re-ranking, with a tiny model the test builds itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.embedder import Reranker
from rag.errors import ConfigurationError
from tests.support.service import ServiceProcess, free_port, running, wait_indexed
from tests.support.tiny_models import build_tiny_cross_encoder

pytestmark = pytest.mark.slow

DOCS = {
    "cats.txt": "Domestic cats sleep for around sixteen hours every day.",
    "dogs.txt": "A dog needs a walk twice a day and likes to sleep after it.",
    "pasta.txt": "Boil the pasta for nine minutes in salted water.",
    "gliders.txt": "The glider project flew its serial number one prototype over the coast.",
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("cross-encoder"))


@pytest.fixture(scope="module")
def service(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("rerank")
    env = {
        "RAG_DATA_DIR": str(root / "data"),
        "RAG_LLM_LOAD": "false",
        "RAG_RERANK_MODEL": str(model),
        "RAG_RERANK_CANDIDATES": "10",
    }
    with running("serve", env, root / "serve.log") as proc:
        with proc.client() as c:
            c.post("/v1/collections", json={"name": "kb"})
            files = [("files", (name, text.encode())) for name, text in DOCS.items()]
            ids = [i["id"] for i in c.post("/v1/collections/kb/documents", files=files).json()["documents"]]
            assert {d["status"] for d in wait_indexed(c, "kb", ids)} == {"indexed"}
        yield proc


def test_the_reranker_scores_pairs_deterministically(model: Path) -> None:
    reranker = Reranker(str(model), device="cpu")
    scores = reranker.score("how long do cats sleep", list(DOCS.values()))
    assert len(scores) == len(DOCS) and len(set(scores)) == len(DOCS)
    assert scores == reranker.score("how long do cats sleep", list(DOCS.values()))
    assert reranker.score("q", []) == []
    with pytest.raises(ConfigurationError, match="not a folder"):
        Reranker(str(model / "missing"))


def test_search_results_come_in_the_cross_encoders_order(service: ServiceProcess, model: Path) -> None:
    query = "how long do cats sleep"
    with service.client() as c:
        reranked = c.post("/v1/collections/kb/search", json={"query": query, "top_k": 3}).json()
        plain = c.post("/v1/collections/kb/search", json={"query": query, "top_k": 3, "rerank": False}).json()
    expected = Reranker(str(model), device="cpu").score(query, list(DOCS.values()))
    by_text = dict(zip(DOCS.values(), expected, strict=True))
    # Every candidate (all four chunks) was re-scored; the best three come back in its order.
    best = sorted(by_text, key=lambda t: by_text[t], reverse=True)[:3]
    assert [h["text"] for h in reranked["results"]] == best
    assert [h["score"] for h in reranked["results"]] == pytest.approx([by_text[t] for t in best], abs=1e-5)
    assert "rerank_s" in reranked["timings"]
    assert "rerank_s" not in plain["timings"]
    assert [h["score"] for h in plain["results"]] != [h["score"] for h in reranked["results"]]


def test_the_service_refuses_a_missing_model(tmp_path: Path) -> None:
    env = {"RAG_DATA_DIR": str(tmp_path / "data"), "RAG_LLM_LOAD": "false", "RAG_RERANK_MODEL": str(tmp_path / "x")}
    proc = ServiceProcess("serve", env, tmp_path / "serve.log", port=free_port())
    try:
        with pytest.raises(RuntimeError, match="re-ranking model"):
            proc.wait_ready(timeout=120)
    finally:
        proc.stop()
