"""``VectorStore`` on each engine, for tests that must hold on both.

``make_store`` is parametrised: ``edge`` (Qdrant Edge in a temporary folder, the
embedded default) and ``server`` (qdrant-client over HTTP against the stand-in
server, one per test module; each store gets its own name prefix so tests
sharing the server never see each other's collections).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rag.store import VectorStore
from tests.support.qdrant_server import run_qdrant_server

__all__ = ["ENGINES", "StoreFactory", "make_store", "qdrant_server_url"]

ENGINES = ("edge", "server")


@pytest.fixture(scope="module")
def qdrant_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_qdrant_server(tmp_path_factory.mktemp("qdrant-server")) as url:
        yield url
        for thread in threading.enumerate():  # the client's version check, before the server stops
            if thread.name.endswith("(_check_compatibility)"):
                thread.join(timeout=10)


StoreFactory = Callable[..., VectorStore]


@pytest.fixture(params=ENGINES)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """``make_store()``: a new, empty store; ``make_store(reopen=n)``: the n-th
    store made by this factory opened again (after it was closed)."""
    created: list[VectorStore] = []
    prefixes: list[str] = []

    def make(reopen: int | None = None) -> VectorStore:
        index = len(created) if reopen is None else reopen
        if request.param == "edge":
            store = VectorStore(path=tmp_path / f"store-{index}")
        else:
            url = request.getfixturevalue("qdrant_server_url")
            if reopen is None:
                prefixes.append(f"t{uuid.uuid4().hex[:10]}_")
            store = VectorStore(url=url, prefix=prefixes[index])
        if reopen is None:
            created.append(store)
        else:
            created.append(store)
            prefixes.append(prefixes[index] if request.param == "server" else "")
        return store

    yield make
    for store in created:
        store.close()
