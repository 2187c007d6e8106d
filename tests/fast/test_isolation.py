"""Tests see no RAG_* variable they did not set and no .env file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rag.settings import Settings
from tests.conftest import _KEEP


def test_no_rag_variable_reaches_a_test() -> None:
    assert [k for k in os.environ if k.startswith("RAG_") and k not in _KEEP] == []


def test_a_dotenv_file_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("RAG_TOP_K=3\nRAG_SEARCH_MODE=lexical\n")
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert (settings.top_k, settings.search_mode) == (5, "hybrid")
    monkeypatch.setenv("RAG_TOP_K", "7")  # what a test sets itself still counts
    assert Settings().top_k == 7
