"""The one retriever: served version vs a given version, its one retry, the
quality gate through it. Real registry (SQLite) and Qdrant (in memory)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag.embedder import EmbedderSet
from rag.errors import BackendError, NotFoundError
from rag.lexical import LexicalEncoder
from rag.options import SearchOptions
from rag.registry import Database, VersionStatus
from rag.retrieval import Retriever
from rag.store import ChunkPoint, VectorStore
from rag.store.server import ServerBackend
from tests.support.fakes import HashEmbedder

SMALL = HashEmbedder(dimension=16, model_id="hash:16")
LARGE = HashEmbedder(dimension=48, model_id="hash:48")
TEXTS = ["cats sleep sixteen hours", "dogs chase balls in the park"]


class CountingStore(VectorStore):
    """An in-memory store that counts searches and can fail the next ones."""

    searches = 0
    failures = 0

    def search(self, *args: Any, **kwargs: Any) -> Any:
        self.searches += 1
        if self.failures:
            self.failures -= 1
            raise BackendError("Qdrant error: connection reset")
        return super().search(*args, **kwargs)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Database, CountingStore, Retriever, str]]:
    registry = Database(f"sqlite:///{tmp_path / 'r.db'}")
    store = CountingStore(backend=ServerBackend.local(None))
    embedders = EmbedderSet(SMALL)  # type: ignore[arg-type]
    embedders._loaded[LARGE.model_id] = LARGE  # type: ignore[assignment]  # as if loaded before
    lexical = LexicalEncoder()
    with registry.unit_of_work() as uow:
        cid = uow.collections.create("c").id
    for version, model in ((1, SMALL), (2, LARGE)):
        store.create_version(cid, version, model.dimension)
        status = VersionStatus.ACTIVE if version == 1 else VersionStatus.BUILDING
        with registry.unit_of_work() as uow:
            uow.versions.add(cid, version, status, embedding_model=model.model_id, dimension=model.dimension)
        points = [
            ChunkPoint(
                document_id=f"d{i}",
                chunk_index=0,
                text=text,
                vector=model.embed_query(text),
                filename=f"{i}.txt",
                lexical=lexical.encode_document(text),
            )
            for i, text in enumerate(TEXTS)
        ]
        store.at_version(cid, version).upsert(cid, points)
    store.point_alias(cid, 1)
    retriever = Retriever(registry=registry, store=store, embedders=embedders, lexical=lexical, top_k=1)
    yield registry, store, retriever, cid
    store.close()
    registry.close()


def test_the_served_version_is_searched_with_its_own_model(world: Any) -> None:
    _, _, retriever, cid = world
    hits, timings = retriever.search(cid, "how long do cats sleep")
    assert [h.filename for h in hits] == ["0.txt"] and hits[0].rank == 1
    assert set(timings) == {"embed_s", "store_s", "total_s"}
    # A given version is searched with the model that built it.
    assert retriever.search(cid, "dogs in the park", version=2)[0][0].filename == "1.txt"
    batch = retriever.search_many(cid, ["cats", "dogs"], SearchOptions(top_k=1))
    assert [[h.filename for h in hits] for hits in batch] == [["0.txt"], ["1.txt"]]


def test_a_query_caught_by_a_version_switch_is_retried_with_the_new_model(world: Any) -> None:
    _, store, retriever, cid = world
    # The moment inside ReindexService.switch_to: the alias is on version 2 (48
    # dimensions), the registry still says version 1 (16): the query is embedded
    # for 1, Qdrant refuses it, and the retry embeds it for 2.
    store.point_alias(cid, 2)
    hits, _ = retriever.search(cid, "how long do cats sleep", SearchOptions(mode="dense"))
    assert [h.filename for h in hits] == ["0.txt"] and store.searches == 2


def test_other_backend_errors_are_not_retried(world: Any) -> None:
    _, store, retriever, cid = world
    store.failures = 1
    with pytest.raises(BackendError, match="connection reset"):
        retriever.search(cid, "cats")
    assert store.searches == 1


def test_served_reads_the_collection_and_its_served_version_in_one_go(world: Any) -> None:
    _, _, retriever, cid = world
    served = retriever.served("c")
    assert served.collection_id == cid and served.version is not None and served.version.version == 1
    # What was read is what the search uses: the same hits as by id.
    assert retriever.search(served, "how long do cats sleep")[0] == retriever.search(cid, "how long do cats sleep")[0]
    assert retriever.search_many(served, ["dogs"]) == retriever.search_many(cid, ["dogs"])
    with pytest.raises(NotFoundError):
        retriever.served("no such collection")
