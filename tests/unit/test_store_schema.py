from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from qdrant_client import QdrantClient, models

from rag.errors import ConfigurationError
from rag.store import VectorStore


def test_a_collection_from_before_hybrid_search_is_refused_with_advice(
    make_store: Callable[[], VectorStore], tmp_path: Path
) -> None:
    old_schema = models.VectorParams(size=4, distance=models.Distance.COSINE)  # one unnamed vector
    store = make_store()
    if store.backend.kind == "edge":
        # Made by a release on qdrant-client's local mode, migrated into Edge as it is.
        store.close()
        old = QdrantClient(path=str(tmp_path / "qdrant"))
        old.create_collection("rag_c1", vectors_config=old_schema)
        old.close()
        store = VectorStore(path=tmp_path / "store", legacy_path=tmp_path / "qdrant")
    else:
        store.backend._client.create_collection(f"{store._prefix}c1", vectors_config=old_schema)  # type: ignore[attr-defined]
    try:
        with pytest.raises(ConfigurationError, match="earlier version"):
            store.ensure_collection("c-1", 4)
        store.ensure_collection("c-2", 4)  # a new one gets the hybrid schema
        store.ensure_collection("c-2", 4)
    finally:
        store.close()
