"""Vector store: the only package that talks to Qdrant.

``VectorStore`` (``vector_store.py``) is the interface; the engine behind it is
Qdrant Edge in this process (``edge.py``, the embedded default) or a Qdrant
server (``server.py``, split mode). ``migrate.py`` moves a store made by
qdrant-client's local mode (earlier releases) into Edge.
"""

from rag.store.model import (
    DENSE,
    LEXICAL,
    ChunkPoint,
    CollectionOptions,
    MetadataValue,
    ScoredChunk,
    SearchFilter,
    point_id,
)
from rag.store.vector_store import VectorStore

__all__ = [
    "DENSE",
    "LEXICAL",
    "ChunkPoint",
    "CollectionOptions",
    "MetadataValue",
    "ScoredChunk",
    "SearchFilter",
    "VectorStore",
    "point_id",
]
