"""Store engine: Qdrant Edge, the Qdrant engine inside this process (embedded mode).

Layout under the store's folder::

    store.json              which physical collection each alias serves (replaced atomically)
    .lock                   held while a process has the store open (one process at a time)
    collections/<name>/     one Edge shard per physical collection (WAL + segments)

Edge has no aliases, so this module keeps them in ``store.json``: a switch writes
the whole record to a temporary file, fsyncs it and ``os.replace``-s it over the
old one, under a lock, and updates the in-memory map in the same step; a query
resolves the alias once, so it sees either the old or the new version.

Edge runs no background work: new points land in a plain segment (searched
exactly) until ``optimize`` builds the HNSW index. ``optimize`` holds the GIL
for the whole build (seconds per 10,000 points), so it never runs in this
process: a copy of the shard is optimized by a child process (at a lower CPU
priority) while searches and writes go on against the original; the writes
made meanwhile are kept and applied again to the optimized copy, which then
replaces the original in one short step. A background thread starts such a build once enough points were
written since the last one (``index_after``) and the collection has been quiet
for a moment.

Why one module of about 650 lines: it is the one adapter to Qdrant Edge (each
outside system sits behind one module), and its three parts (the alias record,
the shards' life cycle with their write journal, the index build in a child)
share the shard map, its lock and the journal; split, they would reach into
each other's private state. What both engines share (layout, hit and record
conversion) is in ``model.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.errors import BackendError, ConfigurationError
from rag.store.model import (
    DENSE,
    LEXICAL,
    AnyOf,
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

__all__ = ["EdgeBackend", "is_edge_store"]

log = logging.getLogger(__name__)

_RECORD = "store.json"
_FORMAT = 1
_COLLECTIONS = "collections"
_OPTIMIZING = ".optimizing-"
_REPLACED = ".replaced-"
_DELETED = ".deleted-"
# The child process that builds a shard's indexes: Qdrant Edge only, no project code.
_OPTIMIZE_CHILD = (
    "import os, sys\n"
    "try:\n    os.nice(5)\nexcept OSError:\n    pass\n"
    "from qdrant_edge import EdgeShard\n"
    "shard = EdgeShard.load(sys.argv[1])\n"
    "shard.optimize()\n"
    "shard.flush()\n"
    "shard.close()\n"
)


def is_edge_store(path: Path) -> bool:
    return (path / _RECORD).is_file()


def _edge() -> Any:
    try:
        import qdrant_edge
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ConfigurationError(
            "the embedded store needs the qdrant-edge-py package (pip install qdrant-edge-py)"
        ) from exc
    return qdrant_edge


class _Shard:
    """One open Edge shard. ``lock`` is held for each call into it; ``gate`` by
    writers, and by an index build while it copies the files and while it swaps
    the built copy in (writes wait, reads go on)."""

    def __init__(self, path: Path, shard: Any, pending: int = 0) -> None:
        self.path = path
        self.shard = shard
        self.lock = threading.RLock()
        self.gate = threading.Lock()
        self.pending = pending  # points written since the last index build
        self.last_write = 0.0
        self.closed = False
        self.building = threading.Lock()  # one index build at a time
        self.journal: list[Any] | None = None  # writes made while a build runs


class EdgeBackend:
    kind = "edge"

    def __init__(
        self,
        path: Path | None,
        *,
        index_after: int = 20_000,
        quiet_s: float = 2.0,
        background: bool = True,
    ) -> None:
        self._qe = _edge()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if path is None:  # in memory, for tests: a folder removed on close
            self._tmp = tempfile.TemporaryDirectory(prefix="rag-edge-")
            path = Path(self._tmp.name)
        self.path = path
        self._index_after = index_after
        self._quiet_s = quiet_s
        self._lock = threading.RLock()  # the alias record and the map of shards
        self._shards: dict[str, _Shard] = {}
        try:
            (path / _COLLECTIONS).mkdir(parents=True, exist_ok=True)
            self._lockfile = open(path / ".lock", "a+")  # noqa: SIM115 - held until close
        except OSError as exc:
            raise BackendError(f"cannot open the vector store at {path}: {exc}") from exc
        try:
            fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lockfile.close()
            raise BackendError(
                f"cannot open the vector store at {path}: another process has it open. The "
                "embedded store can be opened by one process only; use a Qdrant server "
                "(RAG_QDRANT_URL) to share it."
            ) from exc
        self._aliases = self._read_record()
        self._recover()
        for child in sorted((path / _COLLECTIONS).iterdir()):
            if child.is_dir() and not child.name.startswith("."):
                self._shards[child.name] = self._load(child)
        self._closed = False
        self._closing = threading.Event()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._optimizer, name="store-indexer", daemon=True)
            self._thread.start()

    # --- the record -------------------------------------------------------------
    def _read_record(self) -> dict[str, str]:
        record = self.path / _RECORD
        if not record.exists():
            self._write_record({})
            return {}
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot read {record}: {exc}") from exc
        if data.get("format") != _FORMAT:
            raise ConfigurationError(f"{record} has format {data.get('format')}; this release reads {_FORMAT}")
        return {str(k): str(v) for k, v in data.get("aliases", {}).items()}

    def _write_record(self, aliases: dict[str, str]) -> None:
        record = self.path / _RECORD
        tmp = record.with_name(f".{_RECORD}.tmp")
        body = json.dumps({"format": _FORMAT, "aliases": aliases}, indent=1, sort_keys=True)
        try:
            with open(tmp, "w") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, record)
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise BackendError(f"cannot write {record}: {exc}") from exc

    def _recover(self) -> None:
        """Finish or undo an index build that a crash interrupted."""
        folder = self.path / _COLLECTIONS
        for child in folder.iterdir():
            if child.name.startswith(_REPLACED):
                original = folder / child.name[len(_REPLACED) :]
                if original.exists():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.rename(original)
            elif child.name.startswith((_OPTIMIZING, _DELETED)):
                shutil.rmtree(child, ignore_errors=True)

    def _load(self, path: Path) -> _Shard:
        try:
            shard = self._qe.EdgeShard.load(str(path))
            info = shard.info()
        except Exception as exc:
            raise BackendError(f"cannot load the vector store collection {path}: {exc}") from exc
        # Dense vectors not yet in an HNSW graph (sparse ones are always indexed).
        pending = max(0, 2 * int(info.points_count) - int(info.indexed_vectors_count))
        return _Shard(path, shard, pending)

    # --- lifecycle ----------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        if self._thread is not None:
            with self._wake:
                self._wake.notify_all()
            self._thread.join(timeout=60)
        with self._lock:
            shards = list(self._shards.values())
        for s in shards:
            # A build in progress (from any thread) sees the store closing, ends its
            # child and removes its copy; nothing of it may outlive close().
            with s.building:
                pass
        with self._lock:
            for s in self._shards.values():
                with s.gate, s.lock:
                    self._close_shard(s)
            self._shards.clear()
            with contextlib.suppress(OSError):
                fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_UN)
                self._lockfile.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _close_shard(self, s: _Shard) -> None:
        if not s.closed:
            s.closed = True
            with contextlib.suppress(Exception):
                s.shard.flush()
            with contextlib.suppress(Exception):
                s.shard.close()

    def ping(self) -> None:
        if not (self.path / _RECORD).exists():
            raise BackendError(f"the vector store at {self.path} is gone")

    # --- collections ----------------------------------------------------------------
    def list_collections(self) -> list[str]:
        with self._lock:
            return sorted(self._shards)

    def exists(self, name: str) -> bool:
        with self._lock:
            return self._aliases.get(name, name) in self._shards

    def _get(self, name: str) -> _Shard | None:
        with self._lock:
            return self._shards.get(self._aliases.get(name, name))

    def _need(self, name: str) -> _Shard:
        s = self._get(name)
        if s is None:
            raise BackendError(f"Qdrant error: collection {name} doesn't exist")
        return s

    def layout(self, name: str) -> Layout:
        s = self._need(name)
        try:
            config = json.loads((s.path / "edge_config.json").read_text())
            dense = {k: int(v["size"]) for k, v in (config.get("vectors") or {}).items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"cannot read the configuration of {s.path}: {exc}") from exc
        with s.lock:
            indexed = set(self._run(s, lambda: s.shard.info().payload_schema).keys())
        return Layout(dense=dense, indexed=indexed)

    def create(self, name: str, vector_size: int) -> None:
        qe = self._qe
        config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=vector_size, distance=qe.Distance.Cosine)},
            sparse_vectors={LEXICAL: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            hnsw_config=self.hnsw_config(),
            optimizers=self.optimizers_config(),
        )
        self.create_with(name, config)

    @property
    def engine(self) -> Any:
        """The ``qdrant_edge`` module."""
        return self._qe

    def hnsw_config(self) -> Any:
        # What makes a build of 1M points fit on 2 cores (measured on 384-d
        # clustered vectors, top-10 recall at ef 128):
        # - 64 candidates while building, not Qdrant's 100: half the CPU for the
        #   same recall (20,000 points: 10.7 s against 20.7 s; 0.986 against 0.989);
        # - no extra graph links per indexed payload value (payload_m=0): Qdrant
        #   otherwise builds another graph over each large block of an indexed
        #   field (a metadata value, a date range, chunk numbers), 3.4x the CPU at
        #   50,000 points (48 s against 14 s), growing faster than the points.
        #   Filtered queries use ACORN instead (see query): recall with a filter
        #   matching a third of the points 0.94 against 0.90 with the extra links
        #   and 0.69 with neither.
        # 16 links per node; all cores build (the child runs at a lower priority);
        # exact search below 10 MB of matching vectors (small filters).
        return self._qe.HnswIndexConfig(
            m=16, ef_construct=64, full_scan_threshold=10_000, max_indexing_threads=0, payload_m=0
        )

    def optimizers_config(self) -> Any:
        # A build indexes every segment over 1 MB (about 700 vectors of 384
        # floats); when builds run is decided here (index_after), not by size.
        return self._qe.EdgeOptimizersConfig(indexing_threshold=1_000)

    def create_with(self, name: str, config: Any) -> None:
        """A shard with an explicit ``EdgeConfig`` (the migration copies old layouts)."""
        with self._lock:
            if name in self._shards:
                raise BackendError(f"Qdrant error: collection {name} already exists")
            path = self.path / _COLLECTIONS / name
            shutil.rmtree(path, ignore_errors=True)  # a leftover no shard was loaded from
            try:
                shard = self._qe.EdgeShard.create(str(path), config)
            except Exception as exc:
                raise BackendError(f"cannot create the vector store collection {name}: {exc}") from exc
            self._shards[name] = _Shard(path, shard)

    def delete(self, name: str) -> None:
        with self._lock:
            s = self._shards.get(name)
        if s is None:
            return
        with s.gate:  # waits for an index build of this collection to end
            with self._lock:
                self._shards.pop(name, None)
            with s.lock:
                self._close_shard(s)
        trash = s.path.with_name(f"{_DELETED}{name}")
        try:
            s.path.rename(trash)
        except OSError as exc:
            raise BackendError(f"cannot delete {s.path}: {exc}") from exc
        shutil.rmtree(trash, ignore_errors=True)

    # --- points ----------------------------------------------------------------------
    def _run(self, s: _Shard, fn: Any) -> Any:
        if s.closed:
            raise BackendError("Qdrant error: the collection was dropped")
        try:
            return fn()
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"Qdrant Edge error: {exc}") from exc

    def _write(self, name: str, operation: Any, added: int = 0) -> None:
        s = self._need(name)
        with s.gate, s.lock:
            self._run(s, lambda: s.shard.update(operation))
            if s.journal is not None:
                s.journal.append(operation)
            s.pending += added
            s.last_write = time.monotonic()
        if added and s.pending >= self._index_after and self._thread is not None:
            with self._wake:
                self._wake.notify_all()

    def create_index(self, name: str, field: str, schema: PayloadSchema) -> None:
        qe = self._qe
        kind = {
            "keyword": qe.PayloadSchemaType.Keyword,
            "integer": qe.PayloadSchemaType.Integer,
            "float": qe.PayloadSchemaType.Float,
            "bool": qe.PayloadSchemaType.Bool,
            "datetime": qe.PayloadSchemaType.Datetime,
        }[schema]
        self._write(name, qe.UpdateOperation.create_field_index(field, kind))

    def upsert(self, name: str, points: Sequence[PointRecord]) -> None:
        qe = self._qe
        structs = []
        for p in points:
            vectors: dict[str, Any] = dict(p.vectors)
            for key, (indices, values) in p.sparse.items():
                vectors[key] = qe.SparseVector(indices, values)
            structs.append(qe.Point(p.id, vectors, p.payload))
        self._write(name, qe.UpdateOperation.upsert_points(structs), added=len(structs))

    def delete_where(self, name: str, where: Sequence[Condition]) -> None:
        self._write(name, self._qe.UpdateOperation.delete_points_by_filter(self._filter(where)))

    def count(self, name: str, where: Sequence[Condition] = ()) -> int:
        s = self._need(name)
        request = self._qe.CountRequest(exact=True, filter=self._filter(where) if where else None)
        with s.lock:
            return int(self._run(s, lambda: s.shard.count(request)))

    def query(self, name: str, spec: QuerySpec) -> list[Hit]:
        qe = self._qe
        s = self._need(name)
        # ACORN (neighbours of neighbours when a filter rejects most of them) keeps
        # filtered recall up without payload links in the graph (hnsw_config).
        acorn = qe.AcornSearchParams(enable=True) if spec.where and not spec.exact else None
        params = qe.SearchParams(hnsw_ef=spec.hnsw_ef, exact=spec.exact, acorn=acorn)
        sparse = qe.SparseVector(spec.lexical.indices, spec.lexical.values) if spec.lexical is not None else None
        with_vector = [DENSE] if spec.with_dense else False
        flt = self._filter(spec.where) if spec.where else None
        if spec.dense is not None and sparse is not None:
            request = qe.QueryRequest(
                limit=spec.limit,
                prefetches=[
                    qe.Prefetch(limit=spec.pool, query=qe.Query.Nearest(spec.dense, using=DENSE), params=params),
                    qe.Prefetch(limit=spec.pool, query=qe.Query.Nearest(sparse, using=LEXICAL)),
                ],
                query=qe.Fusion.Rrf(k=2),
                filter=flt,
                with_payload=True,
                with_vector=with_vector,
            )
        elif spec.dense is not None:
            request = qe.QueryRequest(
                limit=spec.limit,
                query=qe.Query.Nearest(spec.dense, using=DENSE),
                filter=flt,
                params=params,
                with_payload=True,
                with_vector=with_vector,
            )
        else:
            request = qe.QueryRequest(
                limit=spec.limit,
                query=qe.Query.Nearest(sparse, using=LEXICAL),
                filter=flt,
                with_payload=True,
                with_vector=False,
            )
        with s.lock:
            points = self._run(s, lambda: s.shard.query(request))
        return [hit_of(point) for point in points]

    def scroll(self, name: str, batch: int = 256) -> Iterator[list[PointRecord]]:
        s = self._need(name)
        offset: Any = None
        while True:
            request = self._qe.ScrollRequest(offset=offset, limit=batch, with_payload=True, with_vector=True)
            with s.lock:
                records, offset = self._run(s, lambda r=request: s.shard.scroll(r))
            out = [record_of(r) for r in records]
            if out:
                yield out
            if offset is None:
                return

    # --- aliases -----------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        with self._lock:
            return dict(self._aliases)

    def set_alias(self, alias: str, target: str | None) -> None:
        with self._lock:
            if alias in self._shards:
                raise BackendError(f"Qdrant error: {alias} is a collection, not an alias")
            if target is not None and target not in self._shards:
                raise BackendError(f"Qdrant error: collection {target} doesn't exist")
            aliases = dict(self._aliases)
            if target is None:
                aliases.pop(alias, None)
            else:
                aliases[alias] = target
            self._write_record(aliases)  # durable first, then visible
            self._aliases = aliases

    # --- index builds ---------------------------------------------------------------
    def stats(self, name: str) -> dict[str, int]:
        """Points, vectors held in an index (dense HNSW and sparse), segments."""
        s = self._need(name)
        with s.lock:
            info = self._run(s, s.shard.info)
        return {
            "points": int(info.points_count),
            "indexed_vectors": int(info.indexed_vectors_count),
            "segments": int(info.segments_count),
            "pending": s.pending,
        }

    def optimize(self, name: str) -> bool:
        """Build the HNSW index of a collection in a child process and swap it in.
        Searches and writes go on meanwhile (writes wait only while the files are
        copied); writes made during the build are applied again to the built copy
        before it is served. False when the collection is gone or the build
        failed (logged)."""
        with self._lock:
            s = self._shards.get(self._aliases.get(name, name))
        if s is None or self._closing.is_set():
            return False
        with s.building:
            copy = s.path.with_name(f"{_OPTIMIZING}{s.path.name}")
            with s.gate:
                if s.closed:
                    return False
                with s.lock:
                    self._run(s, s.shard.flush)
                    points = self._run(s, lambda: s.shard.info().points_count)
                try:
                    shutil.rmtree(copy, ignore_errors=True)
                    shutil.copytree(s.path, copy)
                except OSError as exc:
                    log.error("index build of %s: cannot copy the collection: %s", s.path.name, exc)
                    shutil.rmtree(copy, ignore_errors=True)
                    return False
                s.journal, pending_at_copy = [], s.pending
            started = time.monotonic()
            log.info("building the search index of %s (%d points) in a child process", s.path.name, points)
            try:
                finished = self._build_in_child(copy)
            except (OSError, subprocess.SubprocessError) as exc:
                log.error("index build of %s failed: %s", s.path.name, exc)
                finished = False
            with s.gate, s.lock:
                journal, s.journal = s.journal or [], None
                if finished and not s.closed:
                    self._swap(s, copy, journal)
                    s.pending = max(0, s.pending - pending_at_copy)
                else:
                    finished = False
            shutil.rmtree(copy, ignore_errors=True)
            if finished:
                log.info(
                    "search index of %s built in %.1f s (%d writes made meanwhile applied again)",
                    s.path.name,
                    time.monotonic() - started,
                    len(journal),
                )
            return finished

    def _swap(self, s: _Shard, copy: Path, journal: list[Any]) -> None:
        """Serve the built copy in place of the original (under the shard's gate
        and lock); on any failure the original, which has every write, stays."""
        replaced = s.path.with_name(f"{_REPLACED}{s.path.name}")
        self._close_shard(s)
        built: Any = None
        try:
            s.path.rename(replaced)
            copy.rename(s.path)
            built = self._qe.EdgeShard.load(str(s.path))
            for operation in journal:
                built.update(operation)
            built.flush()
        except Exception as exc:
            log.error("cannot serve the index built for %s; keeping the original: %s", s.path.name, exc)
            if built is not None:
                with contextlib.suppress(Exception):
                    built.close()
            if replaced.exists():
                if s.path.exists():
                    s.path.rename(copy)  # removed by the caller
                replaced.rename(s.path)
            s.shard = self._qe.EdgeShard.load(str(s.path))
            s.closed = False
            return
        s.shard = built
        s.closed = False
        shutil.rmtree(replaced, ignore_errors=True)

    def _build_in_child(self, copy: Path) -> bool:
        """Runs the build; False when it failed or the store is closing (the
        child is then killed: a restart must not wait for a long build)."""
        with tempfile.TemporaryFile() as errors:
            child = subprocess.Popen(
                [sys.executable, "-c", _OPTIMIZE_CHILD, str(copy)], stdout=subprocess.DEVNULL, stderr=errors
            )
            while True:
                try:
                    code = child.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    if self._closing.is_set():
                        child.kill()
                        child.wait()
                        log.warning("index build of %s stopped: the store is closing", copy.name)
                        return False
            if code != 0:
                errors.seek(0)
                detail = errors.read().decode(errors="replace")[-2000:]
                log.error("index build of %s failed (exit %s): %s", copy.name, code, detail)
                return False
        return True

    def optimize_due(self, *, force: bool = False) -> list[str]:
        """Build the indexes of collections with enough new points (all with
        pending points when ``force``); returns the names built."""
        built = []
        now = time.monotonic()
        with self._lock:
            candidates = list(self._shards.items())
        for name, s in candidates:
            due = s.pending > 0 if force else (s.pending >= self._index_after and now - s.last_write >= self._quiet_s)
            if due and self.optimize(name):
                built.append(name)
        return built

    def _optimizer(self) -> None:
        while not self._closing.is_set():
            with self._wake:
                self._wake.wait(timeout=max(self._quiet_s, 0.5))
            if self._closing.is_set():
                return
            try:
                self.optimize_due()
            except Exception:  # the loop must survive; searches work without the index
                log.exception("background index build failed")

    # --- filters ----------------------------------------------------------------------
    def _filter(self, conditions: Sequence[Condition]) -> Any:
        return self._qe.Filter(must=[self._condition(c) for c in conditions])

    def _condition(self, c: Condition) -> Any:
        qe = self._qe
        if isinstance(c, Match):
            if len(c.values) == 1:
                return qe.FieldCondition(c.key, match=qe.MatchValue(c.values[0]))
            return qe.FieldCondition(c.key, match=qe.MatchAny(list(c.values)))
        if isinstance(c, NumberRange):
            return qe.FieldCondition(c.key, range=qe.RangeFloat(gte=c.gte, lte=c.lte))
        if isinstance(c, DateRange):
            return qe.FieldCondition(c.key, range=qe.RangeDateTime(gte=_iso(c.gte), lte=_iso(c.lte)))
        if isinstance(c, AnyOf):
            return qe.Filter(should=[self._condition(o) for o in c.options])
        raise TypeError(f"unknown condition {c!r}")


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()
