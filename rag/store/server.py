"""Store engine: a Qdrant server through qdrant-client (split mode, scale-out).

The same class also drives qdrant-client's *local mode* (a pure-Python engine
that scans every point): the tests' stand-in server runs on it, benchmarks
compare against it, and the migration reads stores made by earlier releases
with it.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from rag.errors import BackendError
from rag.store.model import (
    DENSE,
    LEXICAL,
    CollectionOptions,
    Condition,
    DateRange,
    Hit,
    Layout,
    Match,
    NumberRange,
    PayloadSchema,
    PointRecord,
    QuerySpec,
    hit_of,
    record_of,
)

__all__ = ["ServerBackend"]


class ServerBackend:
    kind = "server"

    def __init__(self, client: Any, *, options: CollectionOptions | None = None, local: bool = False) -> None:
        self._client = client
        self._options = options or CollectionOptions()
        # Local mode is a Python object guarded by no lock of its own.
        self._lock: Any = threading.RLock() if local else _NullLock()
        self._local = local  # scans every point: search parameters mean nothing to it

    @classmethod
    def connect(cls, url: str, api_key: str | None, options: CollectionOptions | None = None) -> ServerBackend:
        from qdrant_client import QdrantClient

        try:
            client = QdrantClient(url=url, api_key=api_key, timeout=30)
        except Exception as exc:
            raise BackendError(f"cannot open the Qdrant server at {url}: {exc}") from exc
        return cls(client, options=options)

    @classmethod
    def local(cls, path: str | None) -> ServerBackend:
        """qdrant-client's local mode at ``path`` (None: in memory)."""
        from qdrant_client import QdrantClient

        try:
            client = QdrantClient(path=path) if path else QdrantClient(location=":memory:")
        except Exception as exc:  # portalocker: another process holds it
            raise BackendError(f"cannot open the Qdrant local store at {path}: {exc}") from exc
        return cls(client, local=True)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            with self._lock:
                return fn(*args, **kwargs)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"Qdrant error: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._client.close()

    def ping(self) -> None:
        self._call(self._client.get_collections)

    def list_collections(self) -> list[str]:
        return [c.name for c in self._call(self._client.get_collections).collections]

    def exists(self, name: str) -> bool:
        return bool(self._call(self._client.collection_exists, name))

    def layout(self, name: str) -> Layout:
        info = self._call(self._client.get_collection, name)
        vectors = info.config.params.vectors
        if isinstance(vectors, dict):
            dense = {k: int(v.size) for k, v in vectors.items()}
        else:
            dense = {"": int(vectors.size)} if vectors is not None else {}
        return Layout(dense=dense, indexed=set((info.payload_schema or {}).keys()))

    def create(self, name: str, vector_size: int) -> None:
        from qdrant_client import models

        opts = self._options
        quantization = (
            models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
            )
            if opts.int8_quantization
            else None
        )
        self._call(
            self._client.create_collection,
            name,
            vectors_config={
                DENSE: models.VectorParams(
                    size=vector_size, distance=models.Distance.COSINE, on_disk=opts.on_disk_vectors or None
                )
            },
            sparse_vectors_config={LEXICAL: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            shard_number=opts.shard_number,
            replication_factor=opts.replication_factor,
            write_consistency_factor=opts.write_consistency_factor,
            quantization_config=quantization,
        )

    def delete(self, name: str) -> None:
        self._call(self._client.delete_collection, name)

    def create_index(self, name: str, field: str, schema: PayloadSchema) -> None:
        from qdrant_client import models

        with warnings.catch_warnings():  # local mode: "payload indexes have no effect"
            warnings.simplefilter("ignore", UserWarning)
            self._call(
                self._client.create_payload_index,
                name,
                field_name=field,
                field_schema=models.PayloadSchemaType(schema),
            )

    def upsert(self, name: str, points: Sequence[PointRecord]) -> None:
        from qdrant_client import models

        structs = []
        for p in points:
            vectors: dict[str, Any] = dict(p.vectors)
            for key, (indices, values) in p.sparse.items():
                vectors[key] = models.SparseVector(indices=indices, values=values)
            structs.append(models.PointStruct(id=p.id, vector=vectors, payload=p.payload))
        self._call(self._client.upsert, name, points=structs, wait=True)

    def delete_where(self, name: str, where: Sequence[Condition]) -> None:
        from qdrant_client import models

        self._call(
            self._client.delete,
            name,
            points_selector=models.FilterSelector(filter=_filter(where)),
            wait=True,
        )

    def count(self, name: str, where: Sequence[Condition] = ()) -> int:
        flt = _filter(where) if where else None
        return int(self._call(self._client.count, name, count_filter=flt, exact=True).count)

    def query(self, name: str, spec: QuerySpec) -> list[Hit]:
        from qdrant_client import models

        params = None if self._local else models.SearchParams(exact=spec.exact, hnsw_ef=spec.hnsw_ef)
        sparse = (
            models.SparseVector(indices=spec.lexical.indices, values=spec.lexical.values)
            if spec.lexical is not None
            else None
        )
        kwargs: dict[str, Any]
        if spec.dense is not None and sparse is not None:
            kwargs = {
                "prefetch": [
                    models.Prefetch(query=spec.dense, using=DENSE, limit=spec.pool, params=params),
                    models.Prefetch(query=sparse, using=LEXICAL, limit=spec.pool),
                ],
                "query": models.FusionQuery(fusion=models.Fusion.RRF),
            }
        elif spec.dense is not None:
            kwargs = {"query": spec.dense, "using": DENSE, "search_params": params}
        else:
            kwargs = {"query": sparse, "using": LEXICAL}
        response = self._call(
            self._client.query_points,
            name,
            query_filter=_filter(spec.where) if spec.where else None,
            limit=spec.limit,
            with_payload=True,
            with_vectors=[DENSE] if spec.with_dense else False,
            **kwargs,
        )
        return [hit_of(point) for point in response.points]

    def scroll(self, name: str, batch: int = 256) -> Iterator[list[PointRecord]]:
        offset: Any = None
        while True:
            points, offset = self._call(
                self._client.scroll, name, limit=batch, offset=offset, with_payload=True, with_vectors=True
            )
            records = [record_of(p) for p in points]
            if records:
                yield records
            if offset is None:
                return

    def aliases(self) -> dict[str, str]:
        response = self._call(self._client.get_aliases)
        return {a.alias_name: a.collection_name for a in response.aliases}

    def set_alias(self, alias: str, target: str | None) -> None:
        from qdrant_client import models

        with self._lock:
            ops: list[Any] = []
            if alias in self.aliases():
                ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
            if target is not None:
                ops.append(
                    models.CreateAliasOperation(
                        create_alias=models.CreateAlias(collection_name=target, alias_name=alias)
                    )
                )
            if ops:  # delete and create in one request: queries see the old or the new target
                self._call(self._client.update_collection_aliases, change_aliases_operations=ops)


def _filter(conditions: Sequence[Condition]) -> Any:
    from qdrant_client import models

    return models.Filter(must=[_condition(c) for c in conditions])


def _condition(c: Condition) -> Any:
    from qdrant_client import models

    if isinstance(c, Match):
        if len(c.values) == 1:
            return models.FieldCondition(key=c.key, match=models.MatchValue(value=c.values[0]))
        return models.FieldCondition(key=c.key, match=models.MatchAny(any=list(c.values)))  # type: ignore[arg-type]
    if isinstance(c, NumberRange):
        return models.FieldCondition(key=c.key, range=models.Range(gte=c.gte, lte=c.lte))
    if isinstance(c, DateRange):
        return models.FieldCondition(key=c.key, range=models.DatetimeRange(gte=c.gte, lte=c.lte))
    return models.Filter(should=[_condition(o) for o in c.options])


class _NullLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None
