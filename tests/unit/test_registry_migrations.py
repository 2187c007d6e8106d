"""The registry's schema is owned by Alembic: an old data directory (made by
the schema at commit e4b7f23, before migrations) is upgraded at start-up and
keeps every row; the revisions and the ORM tables agree; units of work commit
all or nothing. Real SQLite files, and PostgreSQL when it runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect

from rag.errors import AlreadyExistsError
from rag.registry import Database, DocumentStatus, RunStatus, VersionStatus
from rag.registry.migrate import BASELINE, head_revision, upgrade
from rag.registry.tables import Base
from tests.support.databases import registry_url_for
from tests.support.registry_e4b7f23 import OLD_METADATA, make_old_registry


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with registry_url_for(request.param, tmp_path) as found:
        yield found


def _diff(url: str, metadata: MetaData) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return [d for d in compare_metadata(context, metadata) if not _alembic_table(d)]
    finally:
        engine.dispose()


def _alembic_table(diff: Any) -> bool:
    return isinstance(diff, tuple) and diff[0] == "remove_table" and diff[1].name == "alembic_version"


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def test_the_baseline_revision_is_the_schema_of_e4b7f23_and_head_is_the_tables(url: str) -> None:
    engine = create_engine(url)
    try:
        upgrade(engine, BASELINE)
    finally:
        engine.dispose()
    assert _diff(url, OLD_METADATA) == []
    Database(url).close()  # start-up: to the newest revision
    assert _diff(url, Base.metadata) == []


def test_an_old_data_directory_is_migrated_at_start_up_keeping_every_row(url: str) -> None:
    written = make_old_registry(url)
    registry = Database(url)
    try:
        with registry.engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == head_revision()
            assert not inspect(conn).has_table("jobs")  # written, never read: dropped by 0002

        with registry.unit_of_work() as uow:
            collections = uow.collections.list_all()
            assert [(c.id, c.name, c.created_at) for c in collections] == [
                (r["id"], r["name"], r["created_at"]) for r in written["collections"]
            ]
            documents = [d for c in collections for d in uow.documents.list_for(c.id)]
            assert len(documents) == len(written["documents"])
            for row in written["documents"]:
                doc = uow.documents.get(row["collection_id"], row["id"])
                assert (doc.filename, doc.content_hash, doc.size_bytes, doc.content_type) == (
                    row["filename"],
                    row["content_hash"],
                    row["size_bytes"],
                    row["content_type"],
                )
                assert doc.status is DocumentStatus(row["status"]) and doc.error == row["error"]
                assert doc.chunk_count == row["chunk_count"]
                assert (doc.created_at, doc.updated_at, doc.indexed_at) == (
                    row["created_at"],
                    row["updated_at"],
                    row["indexed_at"],
                )
                assert doc.metadata == (row["metadata"] or {})
            handbook = collections[0].id
            assert uow.collections.stats(handbook) == {
                "queued": 1, "processing": 0, "indexed": 1, "failed": 1, "documents": 3, "chunks": 0,
            }

            schedules = uow.schedules.list_for()
            assert [(s.id, s.cron, s.timezone, s.kind, s.enabled, s.updated_at) for s in schedules] == [
                (r["id"], r["cron"], r["timezone"], r["kind"], r["enabled"], r["updated_at"])
                for r in written["schedules"]
            ]
            # The old claim still counts: the same slot is not started twice.
            claim = written["schedule_claims"][0]
            assert not uow.schedules.claim_slot(claim["schedule_id"], claim["slot_at"], "beat-2")

            runs = {r.id: r for c in collections for r in uow.runs.list_for(c.id)}
            assert set(runs) == {r["id"] for r in written["reindex_runs"]}
            for row in written["reindex_runs"]:
                run = runs[row["id"]]
                assert run.status is RunStatus(row["status"])
                assert (run.kind, run.trigger, run.schedule_id, run.slot_at) == (
                    row["kind"], row["trigger"], row["schedule_id"], row["slot_at"],
                )
                assert (run.added, run.updated, run.unchanged, run.failed) == (
                    row["added"], row["updated"], row["unchanged"], row["failed"],
                )
                assert (run.from_version, run.to_version, run.score_current, run.score_candidate) == (
                    row["from_version"], row["to_version"], row["score_current"], row["score_candidate"],
                )
                assert (run.created_at, run.started_at, run.finished_at) == (
                    row["created_at"], row["started_at"], row["finished_at"],
                )
            assert uow.runs.lock_holder(handbook) == "r2000000-0000-4000-8000-000000000000"

            versions = uow.versions.list_for(handbook)
            assert [(v.version, v.status, v.chunking, v.expires_at) for v in versions] == [
                (1, VersionStatus.PREVIOUS, None, written["index_versions"][0]["expires_at"]),
                (2, VersionStatus.ACTIVE, "max_tokens=256 overlap_tokens=32", None),
            ]
            assert uow.folders.get_binding(handbook) == "/srv/docs/handbook"
            files = uow.folders.list_files(handbook)
            assert {k: (f.document_id, f.owned) for k, f in files.items()} == {
                r["relpath"]: (r["document_id"], r["owned"]) for r in written["folder_files"]
            }
            golden = uow.golden.list_for(handbook)
            assert [(g.question, g.answers, g.document) for g in golden] == [
                ("Who runs the on-call rota?", ["the ops team"], "intro.md")
            ]

        # And the migrated registry takes new work.
        with registry.unit_of_work() as uow:
            record, created = uow.documents.add(
                collection_id=handbook, filename="new.txt", content_hash="f" * 64, size_bytes=3, content_type=None
            )
        with registry.unit_of_work() as uow:
            assert created and uow.documents.get_by_id(record.id) is not None
        with pytest.raises(AlreadyExistsError), registry.unit_of_work() as uow:
            uow.collections.create("handbook")
    finally:
        registry.close()
    # A second start finds nothing to do.
    Database(url).close()


def test_a_unit_of_work_commits_all_or_nothing(url: str) -> None:
    registry = Database(url)
    try:
        with pytest.raises(RuntimeError), registry.unit_of_work() as uow:
            c = uow.collections.create("atomic")
            uow.versions.add(c.id, 1, VersionStatus.ACTIVE, embedding_model="m", dimension=3)
            raise RuntimeError("the store refused the collection")
        with registry.unit_of_work() as uow:
            assert uow.collections.list_all() == []
        with registry.unit_of_work() as uow:
            c = uow.collections.create("atomic")
            uow.versions.add(c.id, 1, VersionStatus.ACTIVE, embedding_model="m", dimension=3)
        with registry.unit_of_work() as uow:
            assert [v.version for v in uow.versions.list_for(c.id)] == [1]
    finally:
        registry.close()


def test_identical_uploads_racing_make_one_document(url: str) -> None:
    registry = Database(url)
    others = [Database(url) for _ in range(3)]
    try:
        with registry.unit_of_work() as uow:
            c = uow.collections.create("race")
        results: list[tuple[str, bool]] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(len(others))

        def upload(r: Database) -> None:
            try:
                barrier.wait(10)
                with r.unit_of_work() as uow:
                    record, created = uow.documents.add(
                        collection_id=c.id, filename="a.txt", content_hash="a" * 64, size_bytes=1, content_type=None
                    )
                results.append((record.id, created))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=upload, args=(r,)) for r in others]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert len({doc_id for doc_id, _ in results}) == 1
        assert sorted(created for _, created in results) == [False, False, True]
    finally:
        for r in (registry, *others):
            r.close()
