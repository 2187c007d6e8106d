from __future__ import annotations

from pathlib import Path

import pytest
from qdrant_client import QdrantClient, models

from rag.errors import ConfigurationError
from rag.store import VectorStore


def test_a_collection_from_before_hybrid_search_is_refused_with_advice(tmp_path: Path) -> None:
    old = QdrantClient(path=str(tmp_path))
    old.create_collection("rag_c1", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    old.close()
    store = VectorStore(path=tmp_path)
    try:
        with pytest.raises(ConfigurationError, match="earlier version"):
            store.ensure_collection("c-1", 4)
        store.ensure_collection("c-2", 4)  # a new one gets the hybrid schema
        store.ensure_collection("c-2", 4)
    finally:
        store.close()
