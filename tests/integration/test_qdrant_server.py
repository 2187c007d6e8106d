"""The Qdrant stand-in server (tests/support/qdrant_server.py) against qdrant-client.

Every call goes through ``QdrantClient(url=...)`` over HTTP and is compared with the
same call on an in-process local client: the stand-in must be indistinguishable.
``VectorStore`` on the server path is compared the same way with ``VectorStore()``
on Qdrant Edge (the embedded engine).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import random
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.common.version_check import is_compatible
from qdrant_client.http.exceptions import UnexpectedResponse
from qdrant_client.qdrant_remote import QdrantRemote

from rag.store import ChunkPoint, VectorStore
from tests.support.qdrant_server import run_qdrant_server

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

DIM = 8


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_qdrant_server(tmp_path_factory.mktemp("qdrant-server")) as server_url:
        yield server_url
        _finish_version_checks()


def _finish_version_checks() -> None:
    """``QdrantClient(url=...)`` checks the server version in a daemon thread; let it finish
    before the server stops, or it warns that the version could not be obtained."""
    for thread in threading.enumerate():
        if thread.name.endswith("(_check_compatibility)"):
            thread.join(timeout=10)


@pytest.fixture
def clients(url: str) -> Iterator[tuple[QdrantClient, QdrantClient]]:
    """(remote, local): the same calls on both must give the same answers."""
    remote, local = QdrantClient(url=url, timeout=30), QdrantClient(location=":memory:")
    yield remote, local
    for name in [c.name for c in remote.get_collections().collections]:
        remote.delete_collection(name)
    remote.close()
    local.close()


def both(pair: tuple[Any, Any], call: Callable[[Any], Any]) -> Any:
    """Run ``call`` on remote and local, assert equal results, return the remote one."""
    remote, local = (call(side) for side in pair)
    assert _plain(remote) == _plain(local)
    return remote


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):  # Qdrant Edge scores in float32, the stand-in in float64
        return round(value, 5)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    return value.model_dump() if hasattr(value, "model_dump") else value


def _vector(rng: random.Random) -> list[float]:
    return [rng.uniform(-1, 1) for _ in range(DIM)]


def test_root_reports_a_compatible_version(url: str) -> None:
    info = httpx.get(url).json()
    assert info["title"].startswith("qdrant")
    assert is_compatible(importlib.metadata.version("qdrant-client"), info["version"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the client's start-up check (normally a daemon thread)
        QdrantRemote._check_compatibility(url, {}, None, 5)
    assert httpx.get(f"{url}/readyz").status_code == 200


def test_vector_store_on_edge_matches_the_server(url: str) -> None:
    rng = random.Random(7)
    chunks = [
        ChunkPoint(doc, i, f"{doc} chunk {i}", _vector(rng), f"{doc}.txt", page=i or None)
        for doc in ("doc-a", "doc-b")
        for i in range(5)
    ]
    query = _vector(rng)
    stores = (VectorStore(url=url), VectorStore())
    other_process = VectorStore(url=url)  # e.g. the worker: sees what the API wrote
    try:
        for store in stores:
            store.ping()
            store.ensure_collection("c-1", DIM)
            store.ensure_collection("c-1", DIM)  # idempotent
            store.upsert("c-1", chunks)
            store.upsert("c-1", chunks[:2])  # re-index overwrites, never duplicates

        hits = both(stores, lambda s: s.search("c-1", 4, dense=query))
        assert len(hits) == 4
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert both(stores, lambda s: s.count("c-1")) == 10
        assert other_process.count("c-1", "doc-a") == 5

        both(stores, lambda s: s.delete_chunks_from("c-1", "doc-a", 3))
        assert both(stores, lambda s: s.count("c-1", "doc-a")) == 3
        both(stores, lambda s: s.delete_document("c-1", "doc-b"))
        assert both(stores, lambda s: s.count("c-1", "doc-b")) == 0
        assert other_process.count("c-1") == 3
        assert {h.document_id for h in both(stores, lambda s: s.search("c-1", 10, dense=query))} == {"doc-a"}

        both(stores, lambda s: s.drop_collection("c-1"))
        assert both(stores, lambda s: (s.count("c-1"), s.search("c-1", 3, dense=query))) == (0, [])
        both(stores, lambda s: s.delete_document("c-1", "doc-a"))  # missing collection: no-op
    finally:
        for store in (*stores, other_process):
            store.close()


def test_vector_store_hybrid_search_and_filters_on_edge_match_the_server(url: str) -> None:
    from datetime import UTC, datetime, timedelta

    from rag.lexical import LexicalEncoder
    from rag.store import SearchFilter

    enc = LexicalEncoder(avg_len=6)
    rng = random.Random(11)
    now = datetime(2026, 1, 10, tzinfo=UTC)
    texts = ["the cat sat on the mat", "dogs chase cats in the park", "quantum physics of black holes", "a green park"]
    chunks = [
        ChunkPoint(
            f"doc-{i}", 0, text, _vector(rng), f"f{i}.txt",
            lexical=enc.encode_document(text),
            uploaded_at=now - timedelta(days=i),
            metadata={"team": "red" if i % 2 else "blue", "n": i, "x": 0.5 * i},
        )
        for i, text in enumerate(texts)
    ]  # fmt: skip
    dense, lexical = _vector(rng), enc.encode_query("cat park")
    stores = (VectorStore(url=url), VectorStore())
    try:
        for store in stores:
            store.ensure_collection("c-2", DIM)
            store.upsert("c-2", chunks)
        lex = both(stores, lambda s: s.search("c-2", 4, lexical=lexical))
        assert {h.document_id for h in lex} == {"doc-0", "doc-1", "doc-3"}  # doc-2 shares no term
        assert all(h.similarity is None for h in lex)
        hybrid = both(stores, lambda s: s.search("c-2", 4, dense=dense, lexical=lexical, candidates=10))
        assert len(hybrid) == 4 and all(h.similarity is not None for h in hybrid)
        assert both(stores, lambda s: s.search("c-2", 4, lexical=enc.encode_query("the of"))) == []
        filters = [
            (SearchFilter(document_ids=["doc-1", "doc-2"]), {"doc-1", "doc-2"}),
            (SearchFilter(filenames=["f3.txt"]), {"doc-3"}),
            (SearchFilter(uploaded_after=now - timedelta(days=1, hours=1)), {"doc-0", "doc-1"}),
            (SearchFilter(uploaded_before=now - timedelta(days=1, hours=1)), {"doc-2", "doc-3"}),
            (SearchFilter(metadata={"team": "red"}), {"doc-1", "doc-3"}),
            (SearchFilter(metadata={"n": [0, 3]}), {"doc-0", "doc-3"}),
            (SearchFilter(metadata={"x": 1.0}), {"doc-2"}),
            (SearchFilter(document_ids=[]), set()),
        ]
        for where, expected in filters:
            hits = both(stores, lambda s, w=where: s.search("c-2", 10, dense=dense, lexical=lexical, where=w))
            assert {h.document_id for h in hits} == expected, where
    finally:
        for store in stores:
            store.drop_collection("c-2")
            store.close()


def test_missing_collection_is_a_qdrant_404(clients: tuple[QdrantClient, QdrantClient]) -> None:
    remote, _ = clients
    with pytest.raises(UnexpectedResponse) as info:
        remote.get_collection("nope")
    assert info.value.status_code == 404
    assert "nope" in info.value.structured()["status"]["error"]
    with pytest.raises(UnexpectedResponse) as info:
        remote.count("nope")
    assert info.value.status_code == 404
    assert both(clients, lambda c: c.collection_exists("nope")) is False
    assert remote.delete_collection("nope") is False


def test_hybrid_rrf_aliases_scroll_retrieve(clients: tuple[QdrantClient, QdrantClient]) -> None:
    rng = random.Random(11)
    for client in clients:
        client.create_collection(
            "hybrid",
            vectors_config={"dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)},
            sparse_vectors_config={"sparse": models.SparseVectorParams(modifier=models.Modifier.IDF)},
        )
    points = [
        models.PointStruct(
            id=i,
            vector={
                "dense": _vector(rng),
                "sparse": models.SparseVector(
                    indices=sorted(rng.sample(range(30), 4)), values=[rng.uniform(0.1, 2) for _ in range(4)]
                ),
            },
            payload={"n": i, "kind": "even" if i % 2 == 0 else "odd"},
        )
        for i in range(12)
    ]
    both(clients, lambda c: c.upsert("hybrid", points=points, wait=True))
    info = both(clients, lambda c: c.get_collection("hybrid"))
    assert info.points_count == 12

    dense_query = _vector(rng)
    sparse_query = models.SparseVector(indices=[1, 3, 5, 7, 11], values=[1.0, 0.5, 1.5, 1.0, 0.7])
    sparse = both(clients, lambda c: c.query_points("hybrid", query=sparse_query, using="sparse", limit=5))
    assert sparse.points  # IDF-weighted sparse search found something
    fused = both(
        clients,
        lambda c: c.query_points(
            "hybrid",
            prefetch=[
                models.Prefetch(query=dense_query, using="dense", limit=8),
                models.Prefetch(query=sparse_query, using="sparse", limit=8),
            ],
            query=models.FusionQuery(fusion=models.Fusion.RRF),
            query_filter=models.Filter(must=[models.FieldCondition(key="kind", match=models.MatchValue(value="even"))]),
            limit=4,
            with_payload=True,
        ),
    )
    assert fused.points and all(p.payload["kind"] == "even" for p in fused.points)

    tail = models.Filter(must=[models.FieldCondition(key="n", range=models.Range(gte=4))])
    assert both(clients, lambda c: c.count("hybrid", count_filter=tail, exact=True)).count == 8
    page, offset = both(clients, lambda c: c.scroll("hybrid", scroll_filter=tail, limit=3))
    seen = [p.id for p in page]
    while offset is not None:
        page, offset = both(clients, lambda c, o=offset: c.scroll("hybrid", scroll_filter=tail, limit=3, offset=o))
        seen += [p.id for p in page]
    assert seen == list(range(4, 12))
    records = both(clients, lambda c: c.retrieve("hybrid", ids=[0, 5, 99], with_vectors=True))
    assert [r.id for r in records] == [0, 5]
    stored, given = records[1].vector["dense"], points[5].vector["dense"]
    norm = sum(x * x for x in given) ** 0.5
    assert stored == pytest.approx([x / norm for x in given])  # cosine vectors are stored normalized

    create = models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="hybrid", alias_name="live"))
    assert both(clients, lambda c: c.update_collection_aliases(change_aliases_operations=[create])) is True
    assert [a.alias_name for a in both(clients, lambda c: c.get_aliases()).aliases] == ["live"]
    assert both(clients, lambda c: c.get_collection_aliases("hybrid")).aliases[0].collection_name == "hybrid"
    both(clients, lambda c: c.query_points("live", query=dense_query, using="dense", limit=3))
    rename = models.RenameAliasOperation(rename_alias=models.RenameAlias(old_alias_name="live", new_alias_name="v2"))
    delete = models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="v2"))
    both(clients, lambda c: c.update_collection_aliases(change_aliases_operations=[rename]))
    assert both(clients, lambda c: c.count("v2")).count == 12
    both(clients, lambda c: c.update_collection_aliases(change_aliases_operations=[delete]))
    assert both(clients, lambda c: c.get_aliases()).aliases == []


def test_store_persists_across_restarts(tmp_path: Path) -> None:
    chunk = ChunkPoint("doc", 0, "kept", [1.0] + [0.0] * (DIM - 1), "doc.txt")
    for round_ in range(2):
        with run_qdrant_server(tmp_path) as server_url:
            store = VectorStore(url=server_url)
            if round_ == 0:
                store.ensure_collection("p", DIM)
                store.upsert("p", [chunk])
            assert store.count("p") == 1
            store.close()
            _finish_version_checks()
