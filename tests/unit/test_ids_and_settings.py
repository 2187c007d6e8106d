from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from rag.errors import ConfigurationError
from rag.settings import Settings
from rag.store import point_id


def test_point_ids_are_deterministic_and_distinct() -> None:
    a = point_id("c1", "d1", 0)
    assert a == point_id("c1", "d1", 0)
    assert uuid.UUID(a).version == 5
    others = {point_id("c1", "d1", 1), point_id("c1", "d2", 0), point_id("c2", "d1", 0)}
    assert a not in others and len(others) == 3


def test_split_mode_needs_a_qdrant_server(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="RAG_QDRANT_URL"):
        Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/0")
    ok = Settings(data_dir=tmp_path, broker_url="redis://x:6379/0", qdrant_url="http://q:6333")
    assert ok.is_split_mode


def test_embedded_defaults_live_in_the_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert not s.is_split_mode
    assert s.resolved_broker_url.startswith("sqla+sqlite:///") and str(tmp_path) in s.resolved_broker_url
    assert s.resolved_database_url.startswith("sqlite:///")
    assert s.qdrant_path == tmp_path / "qdrant"


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RAG_TOP_K", "7")
    s = Settings()
    assert s.data_dir == tmp_path and s.top_k == 7


def test_inconsistent_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        Settings(data_dir=tmp_path, chunk_max_tokens=50, chunk_overlap_tokens=50)
    with pytest.raises(ConfigurationError):
        Settings(data_dir=tmp_path, llm_n_ctx=1024, max_tokens=2000)
