"""``Registry``: the database, plus one-call shortcuts to the repositories.

Each shortcut is one transaction (``unit_of_work`` with one repository call);
they keep the method names the callers have always used. Where two steps must
commit together, callers open ``registry.unit_of_work()`` and call the
repositories inside it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from rag.registry.database import Database, UnitOfWork
from rag.registry.records import (
    ApiKeyRecord,
    CollectionRecord,
    DocumentRecord,
    DocumentStatus,
    FolderFileRecord,
    GoldenRecord,
    RunRecord,
    RunStatus,
    RunUpdate,
    ScheduleRecord,
    ScheduleUpdate,
    VersionRecord,
    VersionStatus,
)

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Database):
    """Collections, documents, index versions, folders, schedules, runs and
    golden questions, stored through SQLAlchemy (SQLite or PostgreSQL)."""

    def _do(self, work: Callable[[UnitOfWork], T]) -> T:
        with self.unit_of_work() as uow:
            return work(uow)

    # --- collections ---------------------------------------------------------------
    def create_collection(self, name: str) -> CollectionRecord:
        return self._do(lambda u: u.collections.create(name))

    def get_collection(self, name: str) -> CollectionRecord:
        return self._do(lambda u: u.collections.get(name))

    def list_collections(self) -> list[CollectionRecord]:
        return self._do(lambda u: u.collections.list_all())

    def delete_collection(self, collection_id: str) -> None:
        self._do(lambda u: u.collections.delete(collection_id))

    def collection_stats(self, collection_id: str) -> dict[str, int]:
        return self._do(lambda u: u.collections.stats(collection_id))

    # --- documents -----------------------------------------------------------------
    def add_document(
        self,
        *,
        collection_id: str,
        filename: str,
        content_hash: str,
        size_bytes: int,
        content_type: str | None,
        metadata: dict[str, Any] | None = None,
        original_filename: str | None = None,
    ) -> tuple[DocumentRecord, bool]:
        return self._do(
            lambda u: u.documents.add(
                collection_id=collection_id,
                filename=filename,
                content_hash=content_hash,
                size_bytes=size_bytes,
                content_type=content_type,
                metadata=metadata,
                original_filename=original_filename,
            )
        )

    def find_document_by_hash(self, collection_id: str, content_hash: str) -> DocumentRecord | None:
        return self._do(lambda u: u.documents.find_by_hash(collection_id, content_hash))

    def get_document(self, collection_id: str, document_id: str) -> DocumentRecord:
        return self._do(lambda u: u.documents.get(collection_id, document_id))

    def get_document_by_id(self, document_id: str) -> DocumentRecord | None:
        return self._do(lambda u: u.documents.get_by_id(document_id))

    def list_documents(self, collection_id: str) -> list[DocumentRecord]:
        return self._do(lambda u: u.documents.list_for(collection_id))

    def set_document_status(
        self, document_id: str, status: DocumentStatus, *, error: str | None = None, chunk_count: int | None = None
    ) -> DocumentRecord | None:
        return self._do(lambda u: u.documents.set_status(document_id, status, error=error, chunk_count=chunk_count))

    def replace_document_content(
        self, document_id: str, *, content_hash: str, size_bytes: int, filename: str
    ) -> DocumentRecord | None:
        return self._do(
            lambda u: u.documents.replace_content(
                document_id, content_hash=content_hash, size_bytes=size_bytes, filename=filename
            )
        )

    def set_chunk_counts(self, counts: dict[str, int]) -> None:
        self._do(lambda u: u.documents.set_chunk_counts(counts))

    def delete_document(self, document_id: str) -> None:
        self._do(lambda u: u.documents.delete(document_id))

    def count_documents_with_hash(self, content_hash: str) -> int:
        return self._do(lambda u: u.documents.count_with_hash(content_hash))

    # --- index versions --------------------------------------------------------------
    def add_version(
        self,
        collection_id: str,
        version: int,
        status: VersionStatus,
        *,
        embedding_model: str,
        dimension: int,
        chunking: str | None = None,
    ) -> VersionRecord:
        return self._do(
            lambda u: u.versions.add(
                collection_id, version, status, embedding_model=embedding_model, dimension=dimension, chunking=chunking
            )
        )

    def list_versions(self, collection_id: str) -> list[VersionRecord]:
        return self._do(lambda u: u.versions.list_for(collection_id))

    def versions_with_status(self, collection_id: str, status: VersionStatus) -> list[VersionRecord]:
        return self._do(lambda u: u.versions.with_status(collection_id, status))

    def active_version(self, collection_id: str) -> VersionRecord | None:
        return self._do(lambda u: u.versions.active(collection_id))

    def next_version_number(self, collection_id: str) -> int:
        return self._do(lambda u: u.versions.next_number(collection_id))

    def set_version_status(self, collection_id: str, version: int, status: VersionStatus) -> None:
        self._do(lambda u: u.versions.set_status(collection_id, version, status))

    def expired_versions(self, now: datetime | None = None) -> list[VersionRecord]:
        return self._do(lambda u: u.versions.expired(now))

    # --- folders -----------------------------------------------------------------------
    def set_folder(self, collection_id: str, path: str | None) -> None:
        self._do(lambda u: u.folders.set_binding(collection_id, path))

    def get_folder(self, collection_id: str) -> str | None:
        return self._do(lambda u: u.folders.get_binding(collection_id))

    def list_folder_files(self, collection_id: str) -> dict[str, FolderFileRecord]:
        return self._do(lambda u: u.folders.list_files(collection_id))

    def put_folder_file(
        self, collection_id: str, relpath: str, document_id: str, content_hash: str, *, owned: bool = True
    ) -> None:
        self._do(lambda u: u.folders.put_file(collection_id, relpath, document_id, content_hash, owned=owned))

    def delete_folder_file(self, collection_id: str, relpath: str) -> None:
        self._do(lambda u: u.folders.delete_file(collection_id, relpath))

    def count_folder_refs(self, document_id: str) -> int:
        return self._do(lambda u: u.folders.count_refs(document_id))

    # --- schedules -----------------------------------------------------------------------
    def create_schedule(
        self, collection_id: str, *, cron: str, timezone: str, kind: str, enabled: bool
    ) -> ScheduleRecord:
        return self._do(
            lambda u: u.schedules.create(collection_id, cron=cron, timezone=timezone, kind=kind, enabled=enabled)
        )

    def get_schedule(self, collection_id: str, schedule_id: str) -> ScheduleRecord:
        return self._do(lambda u: u.schedules.get(collection_id, schedule_id))

    def list_schedules(self, collection_id: str | None = None) -> list[ScheduleRecord]:
        return self._do(lambda u: u.schedules.list_for(collection_id))

    def update_schedule(self, collection_id: str, schedule_id: str, change: ScheduleUpdate) -> ScheduleRecord:
        return self._do(lambda u: u.schedules.update(collection_id, schedule_id, change))

    def delete_schedule(self, collection_id: str, schedule_id: str) -> None:
        self._do(lambda u: u.schedules.delete(collection_id, schedule_id))

    def claim_slot(self, schedule_id: str, slot_at: datetime, claimed_by: str) -> bool:
        return self._do(lambda u: u.schedules.claim_slot(schedule_id, slot_at, claimed_by))

    # --- runs and the re-index lock ---------------------------------------------------------
    def create_run(
        self,
        collection_id: str,
        *,
        kind: str,
        trigger: str,
        status: RunStatus = RunStatus.QUEUED,
        schedule_id: str | None = None,
        slot_at: datetime | None = None,
        error: str | None = None,
    ) -> RunRecord:
        return self._do(
            lambda u: u.runs.create(
                collection_id,
                kind=kind,
                trigger=trigger,
                status=status,
                schedule_id=schedule_id,
                slot_at=slot_at,
                error=error,
            )
        )

    def update_run(self, run_id: str, change: RunUpdate) -> RunRecord | None:
        return self._do(lambda u: u.runs.update(run_id, change))

    def get_run(self, run_id: str) -> RunRecord | None:
        return self._do(lambda u: u.runs.get(run_id))

    def list_runs(self, collection_id: str, limit: int = 100) -> list[RunRecord]:
        return self._do(lambda u: u.runs.list_for(collection_id, limit))

    def open_runs(self, collection_id: str | None = None) -> list[RunRecord]:
        return self._do(lambda u: u.runs.open(collection_id))

    def acquire_reindex_lock(self, collection_id: str, run_id: str, *, stale_after_s: float) -> bool:
        return self._do(lambda u: u.runs.acquire_lock(collection_id, run_id, stale_after_s=stale_after_s))

    def release_reindex_lock(self, collection_id: str, run_id: str) -> None:
        self._do(lambda u: u.runs.release_lock(collection_id, run_id))

    def reindex_lock_holder(self, collection_id: str) -> str | None:
        return self._do(lambda u: u.runs.lock_holder(collection_id))

    def clear_reindex_locks(self) -> None:
        """Embedded start-up only: the one worker is this process, so any lock,
        running run or half-built version was cut off by a crash."""
        with self.unit_of_work() as uow:
            uow.runs.clear_locks()
            uow.runs.fail_running("interrupted by a restart of the service")
            uow.versions.fail_building()

    # --- golden questions -------------------------------------------------------------------
    def replace_golden(self, collection_id: str, items: list[GoldenRecord]) -> int:
        return self._do(lambda u: u.golden.replace(collection_id, items))

    def list_golden(self, collection_id: str) -> list[GoldenRecord]:
        return self._do(lambda u: u.golden.list_for(collection_id))

    # --- API keys -------------------------------------------------------------------------
    def add_api_key(
        self,
        *,
        name: str,
        key_hash: str,
        prefix: str,
        scopes: list[str],
        key_id: str | None = None,
        if_absent: bool = False,
    ) -> ApiKeyRecord | None:
        return self._do(
            lambda u: u.api_keys.add(
                name=name, key_hash=key_hash, prefix=prefix, scopes=scopes, key_id=key_id, if_absent=if_absent
            )
        )

    def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        return self._do(lambda u: u.api_keys.find_by_hash(key_hash))

    def list_api_keys(self) -> list[ApiKeyRecord]:
        return self._do(lambda u: u.api_keys.list_all())

    def revoke_api_key(self, key_id: str) -> ApiKeyRecord | None:
        return self._do(lambda u: u.api_keys.revoke(key_id))
