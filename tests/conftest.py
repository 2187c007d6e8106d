"""Shared fixtures. Each test builds its own Settings; heavy read-only things
(the assembled model, the embedder) are shared per session.

No test sees the developer's ``RAG_*`` variables or a ``.env`` file: they are
cleared for the session (so module-scoped services start clean too) and again
around every test."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.settings import Settings

# ``make_store`` (a VectorStore on each engine) and the stand-in Qdrant server.
pytest_plugins = ["tests.support.stores"]

# Test switches, not settings of the service.
_KEEP = {"RAG_TEST_REQUIRE_SERVICES"}


def _isolate(mp: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("RAG_") and key not in _KEEP:
            mp.delenv(key)
    mp.setitem(Settings.model_config, "env_file", None)


@pytest.fixture(autouse=True, scope="session")
def _isolated_session() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp)
        yield


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read no RAG_* variable the test did not set, and no .env."""
    _isolate(monkeypatch)


def service_available(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, port: int) -> None:
    """Skip when a local server is missing, unless CI demands it."""
    if service_available(port):
        return
    message = f"{name} is not running on 127.0.0.1:{port}"
    if os.environ.get("RAG_TEST_REQUIRE_SERVICES"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled GGUF, assembled once for the session."""
    from rag.generation import resolve_model_path

    data_dir = tmp_path_factory.mktemp("model")
    return resolve_model_path(Settings(data_dir=data_dir))


@pytest.fixture(scope="session")
def embedder() -> object:
    from rag.embedder import Embedder
    from rag.settings import BUNDLED_EMBEDDING_MODEL

    return Embedder(BUNDLED_EMBEDDING_MODEL)


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    yield Settings(data_dir=tmp_path / "data", _env_file=None)  # type: ignore[call-arg]
