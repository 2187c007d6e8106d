"""The operations a store engine offers, on physical collections and aliases.

Two engines implement it: ``EdgeBackend`` (Qdrant Edge, in-process, the
embedded default) and ``ServerBackend`` (a Qdrant server through qdrant-client;
also qdrant-client's local mode, used to read stores made by earlier releases).
``VectorStore`` holds the logic (names, versions, payload, queries) once, above
either.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from rag.store.model import Condition, Hit, PayloadSchema, PointRecord, QuerySpec

__all__ = ["Backend", "CollectionLayout"]


class CollectionLayout(Protocol):
    """What a physical collection was created with."""

    @property
    def dense(self) -> dict[str, int]: ...  # name -> vector size

    @property
    def indexed(self) -> set[str]: ...  # payload fields with an index


class Backend(Protocol):
    kind: str  # "edge" or "server", for messages and benchmarks

    def close(self) -> None: ...

    def ping(self) -> None: ...

    def list_collections(self) -> list[str]:
        """Physical collections (not aliases)."""
        ...

    def exists(self, name: str) -> bool:
        """A collection or an alias of that name."""
        ...

    def layout(self, name: str) -> CollectionLayout: ...

    def create(self, name: str, vector_size: int) -> None:
        """A physical collection with a ``dense`` (cosine) and a ``lexical``
        (sparse, IDF) vector."""
        ...

    def delete(self, name: str) -> None: ...

    def create_index(self, name: str, field: str, schema: PayloadSchema) -> None: ...

    def upsert(self, name: str, points: Sequence[PointRecord]) -> None: ...

    def delete_where(self, name: str, where: Sequence[Condition]) -> None: ...

    def count(self, name: str, where: Sequence[Condition] = ()) -> int: ...

    def query(self, name: str, spec: QuerySpec) -> list[Hit]: ...

    def scroll(self, name: str, batch: int = 256) -> Iterator[list[PointRecord]]:
        """Every point with its vectors and payload, a batch at a time."""
        ...

    def aliases(self) -> dict[str, str]:
        """Alias -> the physical collection it points at."""
        ...

    def set_alias(self, alias: str, target: str | None) -> None:
        """Point ``alias`` at ``target`` (None: remove it) in one atomic step."""
        ...
