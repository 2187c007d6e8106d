"""Qdrant Edge (embedded) and the Qdrant server path give the same answers.

The same 600 chunks (real BM25 lexical vectors from ``rag.lexical``, random
dense vectors) go into ``VectorStore`` on Edge and on the server path (the
stand-in server over HTTP); every query must return the same top-10 chunks in
the same order, with the same scores (Edge computes in float32), for dense
exact search, lexical, hybrid, and hybrid / dense with filters. Equal final
scores are ordered by point id by ``VectorStore`` on both engines.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from rag.lexical import LexicalEncoder
from rag.store import ChunkPoint, ScoredChunk, SearchFilter, VectorStore

DIM = 32
CID = "5a1e0000-0000-4000-8000-000000000001"
START = datetime(2026, 1, 1, tzinfo=UTC)
VOCAB = [f"term{i}" for i in range(300)]


def _unit(rng: random.Random) -> list[float]:
    v = [rng.gauss(0, 1) for _ in range(DIM)]
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]


def _words(rng: random.Random, n: int) -> str:
    # Zipf-like: a few common terms, a long tail of rare ones.
    return " ".join(VOCAB[min(int(rng.paretovariate(1.2)) - 1, len(VOCAB) - 1)] for _ in range(n))


def _chunks(rng: random.Random, enc: LexicalEncoder) -> list[ChunkPoint]:
    # Every chunk has its own length, so no two BM25 scores are exactly equal:
    # the order of equal scores inside a prefetch is the engine's own business
    # (it decides the ranks that reciprocal-rank fusion then adds up).
    lengths = rng.sample(range(20, 620), 600)
    chunks = []
    for d in range(12):
        for i in range(50):
            text = _words(rng, lengths[d * 50 + i])
            chunks.append(
                ChunkPoint(
                    f"doc-{d}", i, text, _unit(rng), f"file-{d}.txt",
                    page=i // 10 + 1,
                    lexical=enc.encode_document(text),
                    uploaded_at=START + timedelta(days=d),
                    metadata={"team": ["red", "blue", "green"][d % 3], "year": 2020 + d % 4},
                )
            )  # fmt: skip
    return chunks


@pytest.fixture(scope="module")
def stores(qdrant_server_url: str) -> Iterator[tuple[VectorStore, VectorStore]]:
    rng = random.Random(2026)
    enc = LexicalEncoder(avg_len=30)
    chunks = _chunks(rng, enc)
    edge, server = VectorStore(), VectorStore(url=qdrant_server_url, prefix="parity_")
    for store in (edge, server):
        store.ensure_collection(CID, DIM)
        for start in range(0, len(chunks), 128):
            store.upsert(CID, chunks[start : start + 128])
    yield edge, server
    server.drop_collection(CID)
    edge.close()
    server.close()


def _queries() -> list[tuple[list[float], object]]:
    rng = random.Random(7)
    enc = LexicalEncoder(avg_len=30)
    out = []
    for _ in range(8):
        out.append((_unit(rng), enc.encode_query(" ".join(rng.sample(VOCAB[:60], 3)))))
    return out


def _same(a: list[ScoredChunk], b: list[ScoredChunk]) -> None:
    assert [(h.document_id, h.chunk_index) for h in a] == [(h.document_id, h.chunk_index) for h in b]
    assert [h.score for h in a] == pytest.approx([h.score for h in b], rel=1e-4, abs=1e-6)


FILTERS = [
    SearchFilter(document_ids=["doc-1", "doc-4", "doc-7"]),
    SearchFilter(filenames=["file-2.txt", "file-3.txt"], uploaded_after=START + timedelta(days=3)),
    SearchFilter(uploaded_after=START + timedelta(days=2), uploaded_before=START + timedelta(days=8)),
    SearchFilter(metadata={"team": ["red", "green"], "year": 2021}),
]


@pytest.mark.parametrize("mode", ["dense-exact", "lexical", "hybrid"])
def test_top10_ids_and_order_match(stores: tuple[VectorStore, VectorStore], mode: str) -> None:
    edge, server = stores
    for dense, lexical in _queries():
        if mode == "dense-exact":
            kwargs: dict[str, object] = {"dense": dense, "exact": True}
        elif mode == "lexical":
            kwargs = {"lexical": lexical}
        else:
            kwargs = {"dense": dense, "lexical": lexical, "candidates": 40}
        a, b = edge.search(CID, 10, **kwargs), server.search(CID, 10, **kwargs)  # type: ignore[arg-type]
        assert len(a) == 10
        _same(a, b)


@pytest.mark.parametrize("where", FILTERS, ids=["documents", "files+after", "date-range", "metadata"])
def test_filtered_top10_match(stores: tuple[VectorStore, VectorStore], where: SearchFilter) -> None:
    edge, server = stores
    for dense, lexical in _queries()[:4]:
        for kwargs in ({"dense": dense, "lexical": lexical, "candidates": 40}, {"dense": dense, "exact": True}):
            a = edge.search(CID, 10, where=where, **kwargs)  # type: ignore[arg-type]
            b = server.search(CID, 10, where=where, **kwargs)  # type: ignore[arg-type]
            assert a, where
            _same(a, b)


def test_counts_match(stores: tuple[VectorStore, VectorStore]) -> None:
    edge, server = stores
    assert edge.count(CID) == server.count(CID) == 600
    assert edge.count(CID, "doc-3") == server.count(CID, "doc-3") == 50
