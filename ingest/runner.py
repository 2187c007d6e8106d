"""Re-index runs, executed in the ingestion worker.

- **sync**: mirror the collection's bound folder into its served version: new
  files are ingested, changed files (by sha256) re-ingested under the same
  document id, removed files deleted with all their points, unchanged files
  left alone.
- **full**: rebuild every document from its stored original into a new Qdrant
  collection version (with the configured embedding model, chunking and parser)
  while queries keep hitting the alias; score it on the golden questions; then
  switch the alias in one call, or end 'rejected' and drop the new version.

Each run holds the collection's re-index lock (a registry row) from start to
end, so two runs of one collection never overlap, and records its counts,
versions, scores, timing and outcome on its run row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ingest.pipeline import Indexer
from rag.blobs import BlobStore
from rag.embedder import EmbedderSet
from rag.errors import BackendError, FileTooLargeError, InvalidRequestError, RagError
from rag.folders import FolderFile, scan_folder
from rag.options import SearchOptions
from rag.quality import RECALL_AT, answer_recall, passes_gate
from rag.registry import Database, DocumentRecord, DocumentStatus, RunRecord, RunStatus, RunUpdate, VersionStatus
from rag.reindex import ReindexService
from rag.retrieval import Retriever, SearchHit
from rag.store import VectorStore

__all__ = ["ReindexRunner", "RunCounts"]

log = logging.getLogger(__name__)


@dataclass
class RunCounts:
    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    failed: int = 0

    def update(self, status: RunStatus, error: str | None) -> RunUpdate:
        return RunUpdate(
            status=status,
            error=error,
            finished_at=datetime.now(UTC),
            added=self.added,
            updated=self.updated,
            deleted=self.deleted,
            unchanged=self.unchanged,
            failed=self.failed,
        )


class _Rejected(Exception):
    pass


class ReindexRunner:
    def __init__(
        self,
        *,
        registry: Database,
        store: VectorStore,
        blobs: BlobStore,
        indexer: Indexer,
        embedders: EmbedderSet,
        reindex: ReindexService,
        is_supported: Callable[[str], bool],
        max_upload_bytes: int,
        quality_margin: float,
        retriever: Retriever,
    ) -> None:
        self._registry = registry
        self._store = store
        self._blobs = blobs
        self._indexer = indexer
        self._embedders = embedders
        self._reindex = reindex
        self._is_supported = is_supported
        self._max_bytes = max_upload_bytes
        self._margin = quality_margin
        self._retriever = retriever

    def run(self, run_id: str) -> RunRecord | None:
        with self._registry.unit_of_work() as uow:
            run = uow.runs.get(run_id)
        if run is None or run.status is not RunStatus.QUEUED:
            return run  # gone, or delivered twice
        cid = run.collection_id
        with self._registry.unit_of_work() as uow:
            # The lock and 'running' together: a run is never seen running without the lock.
            locked = uow.runs.acquire_lock(cid, run.id, stale_after_s=self._reindex.lock_stale_s)
            if locked:
                uow.runs.update(run.id, RunUpdate(status=RunStatus.RUNNING, started_at=datetime.now(UTC)))
        if not locked:
            with self._registry.unit_of_work() as uow:
                holder = uow.runs.lock_holder(cid)
            reason = f"another re-index of the collection is running (run {holder})"
            return self._finish(run.id, RunStatus.SKIPPED, error=reason)
        try:
            self._reindex.drop_expired_versions()
            counts = RunCounts()
            try:
                if run.kind == "sync":
                    self._sync(run, counts)
                else:
                    self._full(run, counts)
            except _Rejected as exc:
                return self._finish(run.id, RunStatus.REJECTED, counts, error=str(exc))
            except RagError as exc:
                return self._finish(run.id, RunStatus.FAILED, counts, error=exc.message)
            except Exception as exc:
                log.exception("re-index run %s failed", run.id)
                return self._finish(run.id, RunStatus.FAILED, counts, error=f"{type(exc).__name__}: {exc}")
            return self._finish(run.id, RunStatus.SUCCEEDED, counts)
        finally:
            with self._registry.unit_of_work() as uow:
                uow.runs.release_lock(cid, run.id)

    def _finish(
        self, run_id: str, status: RunStatus, counts: RunCounts | None = None, error: str | None = None
    ) -> RunRecord | None:
        return self._update_run(run_id, (counts or RunCounts()).update(status, error))

    def _update_run(self, run_id: str, change: RunUpdate) -> RunRecord | None:
        with self._registry.unit_of_work() as uow:
            return uow.runs.update(run_id, change)

    # --- sync --------------------------------------------------------------------
    def _sync(self, run: RunRecord, counts: RunCounts) -> None:
        cid = run.collection_id
        folder = self._reindex.checked_folder(cid)
        if folder is None:
            raise InvalidRequestError("the collection is not bound to a folder")
        with self._registry.unit_of_work() as uow:
            known = uow.folders.list_files(cid)
        seen: set[str] = set()
        for file in scan_folder(folder, is_supported=self._is_supported):
            seen.add(file.relpath)
            row = known.get(file.relpath)
            document = self._document(row.document_id) if row else None
            if row is not None and document is not None and row.content_hash == file.content_hash:
                counts.unchanged += 1
                continue
            if row is not None and document is not None and not row.owned:
                # The file had matched an uploaded document: leave that one alone.
                with self._registry.unit_of_work() as uow:
                    uow.folders.delete_file(cid, file.relpath)
                document = None
            try:
                ok = self._ingest_file(cid, file, document)
            except RagError as exc:
                log.warning("sync of %s: %s", file.relpath, exc.message)
                ok = False
            if not ok:
                counts.failed += 1
            elif row is None:
                counts.added += 1
            else:
                counts.updated += 1
        for relpath, row in known.items():
            if relpath in seen:
                continue
            with self._registry.unit_of_work() as uow:
                uow.folders.delete_file(cid, relpath)
                orphaned = row.owned and uow.folders.count_refs(row.document_id) == 0
            if orphaned:
                self._delete_document(cid, row.document_id)
            counts.deleted += 1

    def _ingest_file(self, cid: str, file: FolderFile, document: DocumentRecord | None) -> bool:
        """Store the file's bytes and index them; True when indexed."""
        if file.size == 0:
            raise InvalidRequestError(f"{file.relpath} is empty")
        if file.size > self._max_bytes:
            raise FileTooLargeError(f"{file.relpath} is larger than the {self._max_bytes:,}-byte limit")
        with file.path.open("rb") as fh:
            digest, size = self._blobs.put(fh, max_bytes=self._max_bytes, name=file.relpath)
        filename = file.relpath[-512:]
        if document is None:
            # One transaction: a document made by the sync is always recorded as the
            # file's own (owned), even if the process dies right after.
            with self._registry.unit_of_work() as uow:
                record, created = uow.documents.add(
                    collection_id=cid, filename=filename, content_hash=digest, size_bytes=size, content_type=None
                )
                uow.folders.put_file(cid, file.relpath, record.id, digest, owned=created)
            if not created:  # the same bytes are already a document of the collection
                return record.status is not DocumentStatus.FAILED
            return self._indexer.index_document(record.id).status == "indexed"
        with self._registry.unit_of_work() as uow:
            same = uow.documents.find_by_hash(cid, digest)
        if same is not None and same.id != document.id:
            # Now identical to another document: share it, drop the old one if orphaned.
            with self._registry.unit_of_work() as uow:
                uow.folders.put_file(cid, file.relpath, same.id, digest, owned=False)
                orphaned = uow.folders.count_refs(document.id) == 0
            if orphaned:
                self._delete_document(cid, document.id)
            return same.status is not DocumentStatus.FAILED
        old_hash = document.content_hash
        with self._registry.unit_of_work() as uow:
            uow.documents.replace_content(document.id, content_hash=digest, size_bytes=size, filename=filename)
            uow.folders.put_file(cid, file.relpath, document.id, digest)
        if old_hash != digest:
            self._drop_blob_if_unused(old_hash)
        return self._indexer.index_document(document.id).status == "indexed"

    def _delete_document(self, cid: str, document_id: str) -> None:
        document = self._document(document_id)
        if document is None:
            return
        with self._registry.unit_of_work() as uow:
            uow.documents.delete(document_id)
        self._store.delete_document_everywhere(cid, document_id)
        self._drop_blob_if_unused(document.content_hash)

    def _drop_blob_if_unused(self, digest: str) -> None:
        with self._registry.unit_of_work() as uow:
            unused = uow.documents.count_with_hash(digest) == 0
        if unused:
            self._blobs.delete(digest)

    def _document(self, document_id: str) -> DocumentRecord | None:
        with self._registry.unit_of_work() as uow:
            return uow.documents.get_by_id(document_id)

    # --- full --------------------------------------------------------------------
    def _full(self, run: RunRecord, counts: RunCounts) -> None:
        cid = run.collection_id
        embedder = self._embedders.default  # the configured model builds new versions
        with self._registry.unit_of_work() as uow:
            active = uow.versions.active(cid)
            next_number = uow.versions.next_number(cid)
        version = max(next_number, max(self._store.list_versions(cid), default=0) + 1)
        self._store.create_version(cid, version, embedder.dimension)
        # Registered before the documents are listed: from here on the Indexer also
        # writes new uploads into this version, so none is missed.
        with self._registry.unit_of_work() as uow:
            uow.versions.add(
                cid,
                version,
                VersionStatus.BUILDING,
                embedding_model=embedder.model_id,
                dimension=embedder.dimension,
                chunking=self._indexer.chunking,
            )
        self._update_run(
            run.id,
            RunUpdate(from_version=active.version if active else self._store.aliased_version(cid), to_version=version),
        )
        try:
            self._build_and_promote(cid, version, counts, run.id)
        except BaseException as exc:
            status = VersionStatus.REJECTED if isinstance(exc, _Rejected) else VersionStatus.FAILED
            with self._registry.unit_of_work() as uow:
                uow.versions.set_status(cid, version, status)
            try:
                self._store.drop_version(cid, version)
            except RagError:
                log.exception("cannot drop version %s of %s", version, cid)
            raise

    def _build_and_promote(self, cid: str, version: int, counts: RunCounts, run_id: str) -> None:
        embedder = self._embedders.default
        view = self._store.at_version(cid, version)
        chunk_counts: dict[str, int] = {}
        lost: list[str] = []
        with self._registry.unit_of_work() as uow:
            documents = uow.documents.list_for(cid)
        for document in documents:
            try:
                chunk_counts[document.id] = self._indexer.index_into(document, view, embedder)
                counts.updated += 1
            except BackendError:
                raise
            except Exception as exc:
                reason = exc.message if isinstance(exc, RagError) else f"{type(exc).__name__}: {exc}"
                counts.failed += 1
                if document.status is DocumentStatus.INDEXED:
                    lost.append(f"{document.filename}: {reason}")
        # Deleted while the build ran: the delete reached this version before the
        # loop may have written the document again.
        for document_id in list(chunk_counts):
            if self._document(document_id) is None:
                view.delete_document(cid, document_id)
                del chunk_counts[document_id]
        if lost:
            raise RagError(
                f"{len(lost)} document(s) indexed now would fail in the new version, so it was not "
                f"promoted: {'; '.join(lost[:5])}"
            )
        self._gate(cid, version, run_id)
        self._reindex.switch_to(cid, version)
        with self._registry.unit_of_work() as uow:
            for document in uow.documents.list_for(cid):
                if document.status is DocumentStatus.FAILED and document.id in chunk_counts:
                    uow.documents.set_status(document.id, DocumentStatus.INDEXED, chunk_count=chunk_counts[document.id])

    def _gate(self, cid: str, version: int, run_id: str) -> None:
        golden = self._reindex.golden(cid)
        if not golden:
            return
        # Both versions are judged as the service searches (RAG_SEARCH_MODE), without
        # the re-ranker (the worker loads none): the served one, then the candidate.
        def hits(version: int | None) -> Callable[[str, int], list[SearchHit]]:
            return lambda q, k: self._retriever.search(cid, q, SearchOptions(top_k=k, rerank=False), version=version)[0]

        current = answer_recall(golden, hits(None), RECALL_AT)
        candidate = answer_recall(golden, hits(version), RECALL_AT)
        self._update_run(run_id, RunUpdate(score_current=current, score_candidate=candidate))
        if not passes_gate(current, candidate, self._margin):
            raise _Rejected(
                f"answer-recall@{RECALL_AT} of the new version {candidate:.3f} is below the current "
                f"version's {current:.3f} by more than the margin {self._margin:.3f}; the current version stays"
            )
