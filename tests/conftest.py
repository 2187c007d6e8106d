"""Shared fixtures. Each test builds its own Settings; heavy read-only things
(the assembled model, the embedder) are shared per session."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.settings import Settings


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
