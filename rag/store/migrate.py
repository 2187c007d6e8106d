"""Move a store made by qdrant-client's local mode (releases before Qdrant Edge)
into Qdrant Edge, once, at start-up.

Every collection is copied point by point (same IDs, vectors, payload) with a
progress line in the log, then counted on both sides; aliases follow. The copy
is built in ``<store>.migrating`` and renamed into place only when complete, and
the old folder is then renamed (``qdrant.local-mode-<time>``), never deleted:
a crash at any point leaves the old store as it was, and the next start simply
begins again.
"""

from __future__ import annotations

import logging
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.errors import BackendError
from rag.store.edge import EdgeBackend, is_edge_store
from rag.store.model import DENSE, INDEXED_FIELDS, PayloadSchema, schema_of
from rag.store.server import ServerBackend

__all__ = ["is_local_mode_store", "migrate_local_store"]

log = logging.getLogger(__name__)

_PROGRESS_EVERY_S = 2.0


def is_local_mode_store(path: Path) -> bool:
    """qdrant-client's local mode keeps ``meta.json`` and ``collection/``."""
    return (path / "meta.json").is_file()


def migrate_local_store(legacy: Path, target: Path) -> bool:
    """Migrate ``legacy`` into a new Edge store at ``target`` if there is anything
    to migrate; True when it did."""
    if not is_local_mode_store(legacy):
        return False
    if is_edge_store(target):
        log.warning(
            "both a Qdrant local-mode store (%s) and the embedded store (%s) exist; serving %s and leaving %s alone",
            legacy,
            target,
            target,
            legacy,
        )
        return False
    staging = target.with_name(f"{target.name}.migrating")
    shutil.rmtree(staging, ignore_errors=True)
    started = time.monotonic()
    source = ServerBackend.local(str(legacy))
    try:
        names = source.list_collections()
        total = sum(source.count(n) for n in names)
        log.warning(
            "migrating the Qdrant local-mode store %s (%d collections, %d points) into Qdrant Edge at %s",
            legacy,
            len(names),
            total,
            target,
        )
        edge = EdgeBackend(staging, background=False)
        try:
            done = 0
            for name in names:
                done = _copy_collection(source, edge, name, done, total)
            for alias, collection in source.aliases().items():
                edge.set_alias(alias, collection)
        finally:
            edge.close()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        source.close()
    staging.rename(target)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = legacy.with_name(f"{legacy.name}.local-mode-{stamp}")
    legacy.rename(kept)
    log.warning(
        "migration done: %d points in %.1f s; the old store is kept at %s (delete it once you are satisfied)",
        total,
        time.monotonic() - started,
        kept,
    )
    return True


def _copy_collection(source: ServerBackend, edge: EdgeBackend, name: str, done: int, total: int) -> int:
    info = source._call(source._client.get_collection, name)
    edge.create_with(name, _edge_config(edge, info))
    metadata: dict[str, PayloadSchema] = {}
    expected = source.count(name)
    last = time.monotonic()
    for batch in source.scroll(name, batch=512):
        edge.upsert(name, batch)
        for record in batch:
            for key, value in (record.payload.get("metadata") or {}).items():
                metadata.setdefault(f"metadata.{key}", schema_of(value))
        done += len(batch)
        if time.monotonic() - last >= _PROGRESS_EVERY_S:
            last = time.monotonic()
            log.warning("migrating: collection %s, %d of %d points in all", name, done, total)
    layout = edge.layout(name)
    if DENSE in layout.dense:  # this service's schema: the same payload indexes as new collections
        for field, schema in {**INDEXED_FIELDS, **metadata}.items():
            edge.create_index(name, field, schema)
    copied = edge.count(name)
    if copied != expected:
        raise BackendError(f"migration of {name} copied {copied} of {expected} points; the old store is untouched")
    log.warning("migrating: collection %s done (%d points), %d of %d in all", name, copied, done, total)
    return done


def _edge_config(edge: EdgeBackend, info: Any) -> Any:
    qe = edge.engine
    distances = {"Cosine": qe.Distance.Cosine, "Euclid": qe.Distance.Euclid, "Dot": qe.Distance.Dot}
    distances["Manhattan"] = qe.Distance.Manhattan
    params = info.config.params
    raw = params.vectors if isinstance(params.vectors, dict) else {"": params.vectors}
    vectors = {
        key: qe.EdgeVectorParams(size=int(v.size), distance=distances[_enum_name(v.distance)])
        for key, v in raw.items()
        if v is not None
    }
    sparse = {
        key: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf if _enum_name(v.modifier) == "IDF" else None)
        for key, v in (params.sparse_vectors or {}).items()
    }
    return qe.EdgeConfig(
        vectors=vectors,
        sparse_vectors=sparse or None,
        hnsw_config=edge.hnsw_config(),
        optimizers=edge.optimizers_config(),
    )


def _enum_name(value: Any) -> str:
    if value is None:
        return ""
    raw = getattr(value, "value", value)
    text = str(raw)
    return {"cosine": "Cosine", "euclid": "Euclid", "dot": "Dot", "manhattan": "Manhattan", "idf": "IDF"}.get(
        text.lower(), text
    )
