"""The fast tier: the whole app in this process, through FastAPI's TestClient,
with fakes for the heavy parts only: a deterministic text model
(``FakeTextModel``), a hashing embedder, Qdrant in memory (qdrant-client's
engine under the store's own logic), a SQLite registry in
a temporary folder, tasks run at once in the caller's thread, and parsing in
this process (no parse server). Parsing,
chunking, the registry, the store, retrieval, prompts, SSE and error mapping
are the real code.

Every request goes through the ``client`` fixture (``app_client`` builds more),
so headers every request needs (an API key) are added here, in one place."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from rag.settings import Settings
from rag.store import VectorStore
from rag.store.server import ServerBackend
from runtime import Parts, Runtime
from tests.support.fakes import FakeTextModel, HashEmbedder
from tests.support.service import ADMIN_KEY, AUTH_HEADERS

# Headers every request of the fast tier carries: the admin key every app of
# this tier starts with (RAG_BOOTSTRAP_ADMIN_KEY), the same as the subprocess tests'.
DEFAULT_HEADERS: dict[str, str] = dict(AUTH_HEADERS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/fast/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.fast)


@pytest.fixture
def fast_settings(tmp_path: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path / "data",
        bootstrap_admin_key=ADMIN_KEY,
        embedded_worker=False,
        parse_isolation="inline",  # the sandbox has tests of its own; a parse server per app is slow
        llm_n_ctx=2048,
        max_tokens=32,
    )


@pytest.fixture
def model() -> FakeTextModel:
    return FakeTextModel(n_ctx=2048)


@pytest.fixture
def embedder() -> HashEmbedder:  # replaces the session's real embedder in this tier
    return HashEmbedder()


def memory_store() -> VectorStore:
    """The store's logic over qdrant-client's in-memory engine: the Edge engine in
    a temporary folder (``VectorStore()``) fsyncs every write, which made this
    tier twice as slow on a busy machine; both engines are held to the same
    results by tests/integration/test_store_parity.py."""
    return VectorStore(backend=ServerBackend.local(None))


@pytest.fixture
def parts(model: FakeTextModel, embedder: HashEmbedder) -> Parts:
    return Parts(store=memory_store(), embedder=embedder, models=[model], inline_tasks=True)  # type: ignore[arg-type]


@pytest.fixture
def app_client(fast_settings: Settings, parts: Parts) -> Iterator[Callable[..., TestClient]]:
    """Builds clients of apps (closed at the end): ``app_client()`` with the
    fixtures' settings and parts, or ``app_client(settings=..., parts=...)``."""
    clients: list[TestClient] = []

    def build(settings: Settings | None = None, parts_: Parts | None = None, **kwargs: Any) -> TestClient:
        app = create_app(settings or fast_settings, parts=parts_ or parts, **kwargs)
        client = TestClient(app, headers=DEFAULT_HEADERS)
        client.__enter__()
        clients.append(client)
        return client

    yield build
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(app_client: Callable[..., TestClient]) -> TestClient:
    return app_client()


@pytest.fixture
def runtime(client: TestClient) -> Runtime:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return rt
