"""Qdrant Edge as the embedded store: HNSW recall, index builds beside searches,
one process per store, and the migration from qdrant-client's local mode."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rag.errors import BackendError
from rag.lexical import LexicalEncoder
from rag.settings import Settings
from rag.store import ChunkPoint, SearchFilter, VectorStore
from rag.store import edge as edge_module
from rag.store.server import ServerBackend

CID = "ed9e0000-0000-4000-8000-000000000001"


def _unit(rng: random.Random, dim: int) -> list[float]:
    v = [rng.gauss(0, 1) for _ in range(dim)]
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]


def test_hnsw_recall_against_exact_search_at_20000_points(tmp_path: Path) -> None:
    """The index is built in a child process while searches and writes go on;
    top-10 recall of HNSW search against exact search must be at least 0.99."""
    dim, n = 32, 20_000  # small vectors keep the build short; the graph is the same kind
    rng = random.Random(5)
    store = VectorStore(path=tmp_path / "store", index_after=10**9)  # no background build
    try:
        store.ensure_collection(CID, dim)
        batch = 1000
        for start in range(0, n, batch):
            store.upsert(
                CID,
                [ChunkPoint(f"d{i // 100}", i % 100, "", _unit(rng, dim), "f") for i in range(start, start + batch)],
            )
        queries = [_unit(rng, dim) for _ in range(100)]
        edge = store.backend
        name = store._physical(store._name(CID))
        assert edge.stats(name)["indexed_vectors"] == 0  # type: ignore[attr-defined]

        built: list[bool] = []
        builder = threading.Thread(target=lambda: built.append(store.optimize(CID)))
        builder.start()
        during = 0
        while builder.is_alive():  # the API keeps answering and writing while the child builds
            assert len(store.search(CID, 10, dense=queries[during % 100])) == 10
            store.upsert(CID, [ChunkPoint("new", during, "", _unit(rng, dim), "f")])
            during += 1
            builder.join(timeout=0.05)  # pace the calls: the build needs the CPU
        builder.join()
        assert built == [True] and during > 0
        assert edge.stats(name)["indexed_vectors"] >= n  # type: ignore[attr-defined]
        # Writes made during the build were applied to the built copy as well.
        assert store.count(CID, "new") == during and store.count(CID) == n + during
        store.delete_document(CID, "new")

        found = total = 0
        for q in queries:
            exact = {(h.document_id, h.chunk_index) for h in store.search(CID, 10, dense=q, exact=True)}
            approx = {(h.document_id, h.chunk_index) for h in store.search(CID, 10, dense=q)}
            found += len(exact & approx)
            total += len(exact)
        assert found / total >= 0.99
        assert store.count(CID) == n
    finally:
        store.close()


def _children() -> set[int]:
    """Live child processes of this process (from /proc)."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return pids


def _wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_closing_the_store_during_an_index_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """close() while the child process builds the index: close does not hang, the
    child is ended, its unfinished copy is removed, and every point is there
    (and searchable, and indexable) when the store is opened again."""
    dim, n = 16, 3_000
    rng = random.Random(11)
    enc = LexicalEncoder(avg_len=10)
    words = ["red", "green", "blue", "cyan", "magenta", "yellow", "black", "white"]
    chunks = []
    for i in range(n):
        text = " ".join(rng.choices(words, k=6))
        chunks.append(
            ChunkPoint(f"d{i // 100}", i % 100, text, _unit(rng, dim), "f", lexical=enc.encode_document(text))
        )
    queries = [(_unit(rng, dim), enc.encode_query(" ".join(rng.sample(words, 2)))) for _ in range(5)]

    def answers(store: VectorStore) -> list[list[tuple[str, int]]]:
        return [
            [(h.document_id, h.chunk_index) for h in store.search(CID, 10, dense=d, lexical=lx, exact=True)]
            for d, lx in queries
        ]

    # The real build, in a child that then goes on as if its build were long: it
    # says when it has started and never ends by itself.
    started = tmp_path / "child-started"
    child = edge_module._OPTIMIZE_CHILD.replace("shard.flush()\n", "import time\ntime.sleep(3600)\nshard.flush()\n")
    assert child != edge_module._OPTIMIZE_CHILD
    monkeypatch.setattr(edge_module, "_OPTIMIZE_CHILD", f"open({str(started)!r}, 'w').close()\n{child}")

    path = tmp_path / "store"
    store = VectorStore(path=path, index_after=10**9)
    store.ensure_collection(CID, dim)
    for start in range(0, n, 500):
        store.upsert(CID, chunks[start : start + 500])
    before = answers(store)
    before_children = _children()
    built: list[bool] = []
    builder = threading.Thread(target=lambda: built.append(store.optimize(CID)))
    builder.start()
    _wait_for(started.exists, "the build's child process to start")
    building = _children() - before_children
    assert len(building) == 1 and any((path / "collections").glob(".optimizing-*"))

    closer = threading.Thread(target=store.close)
    closer.start()
    closer.join(timeout=60)
    assert not closer.is_alive(), "close() hangs while an index build runs"
    # Once close() has returned, the child is ended and reaped and its unfinished
    # copy removed (another process may open the store right away).
    assert not (building & _children())
    for pid in building:
        assert not os.path.exists(f"/proc/{pid}")
    assert not any((path / "collections").glob(".*"))
    builder.join(timeout=60)
    assert built == [False]

    monkeypatch.undo()
    again = VectorStore(path=path, index_after=10**9)
    try:
        assert again.count(CID) == n
        assert answers(again) == before
        assert again.optimize(CID)  # a build from scratch still works
        assert again.count(CID) == n and answers(again) == before
        again.upsert(CID, chunks[:1])
        assert again.count(CID) == n
    finally:
        again.close()


def test_one_process_at_a_time(tmp_path: Path) -> None:
    store = VectorStore(path=tmp_path / "store")
    try:
        with pytest.raises(BackendError, match="one process"):
            VectorStore(path=tmp_path / "store")
    finally:
        store.close()
    VectorStore(path=tmp_path / "store").close()  # free again once closed


def test_a_local_mode_data_directory_is_migrated_into_edge(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A data directory from a release on qdrant-client's local mode starts: every
    version and the alias are copied, nothing is lost, the old folder is kept."""
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")  # type: ignore[call-arg]
    enc = LexicalEncoder(avg_len=20)
    rng = random.Random(3)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]
    chunks = [
        ChunkPoint(
            f"doc-{d}", i, text := " ".join(rng.choices(words, k=rng.randint(5, 30))), _unit(rng, 16),
            f"f{d}.txt", page=i + 1, lexical=enc.encode_document(text), uploaded_at=start + timedelta(days=d),
            metadata={"team": "red" if d % 2 else "blue"},
        )
        for d in range(6)
        for i in range(40)
    ]  # fmt: skip
    # The old code path: the same VectorStore logic on qdrant-client's local mode in DATA/qdrant.
    old = VectorStore(backend=ServerBackend.local(str(settings.qdrant_path)))
    old.ensure_collection(CID, 16)  # version 1
    old.upsert(CID, chunks[:100])
    old.create_version(CID, 2, 16)
    old.at_version(CID, 2).upsert(CID, chunks)
    old.point_alias(CID, 2)
    queries = [(_unit(rng, 16), enc.encode_query(" ".join(rng.sample(words, 2)))) for _ in range(5)]
    where = SearchFilter(metadata={"team": "red"}, uploaded_after=start + timedelta(days=1))

    def answers(store: VectorStore) -> list[list[tuple[str, int]]]:
        out = []
        for dense, _ in queries:
            for w in (None, where):
                hits = store.search(CID, 10, dense=dense, where=w, exact=True)
                out.append([(h.document_id, h.chunk_index) for h in hits])
        return out

    def points(backend: Any) -> dict[str, Any]:
        found = {}
        for name in backend.list_collections():
            for batch in backend.scroll(name):
                for p in batch:
                    found[f"{name}/{p.id}"] = p
        return found

    before, stored = answers(old), points(old.backend)
    old.close()

    with caplog.at_level(logging.INFO, logger="rag.store"):
        new = VectorStore.from_settings(settings)
    try:
        assert any("migrating: collection" in r.getMessage() for r in caplog.records)
        assert new.backend.kind == "edge"
        assert new.aliased_version(CID) == 2 and new.list_versions(CID) == [1, 2]
        assert new.count(CID) == len(chunks) and new.at_version(CID, 1).count(CID) == 100
        migrated = points(new.backend)
        assert migrated.keys() == stored.keys()
        for key, p in stored.items():  # every point, vector and payload (Edge holds float32)
            q = migrated[key]
            assert q.payload == p.payload
            assert {n: v[0] for n, v in q.sparse.items()} == {n: v[0] for n, v in p.sparse.items()}
            for n, (_, values) in p.sparse.items():
                assert q.sparse[n][1] == pytest.approx(values, rel=1e-6)
            assert q.vectors.keys() == p.vectors.keys()
            for n, vector in p.vectors.items():
                assert q.vectors[n] == pytest.approx(vector, abs=1e-6)
        assert answers(new) == before
        assert "metadata.team" in new.backend.layout(new._physical(new._name(CID))).indexed
        new.upsert(CID, chunks[:1])  # writable as usual
    finally:
        new.close()
    assert not settings.qdrant_path.exists()
    kept = list(settings.data_dir.glob("qdrant.local-mode-*"))
    assert len(kept) == 1 and (kept[0] / "meta.json").exists()  # renamed, not deleted
    again = VectorStore.from_settings(settings)  # the next start does nothing more
    try:
        assert again.count(CID) == len(chunks)
    finally:
        again.close()
