"""Baseline: the schema as ``create_all`` made it at commit e4b7f23, before migrations.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _collection_fk(primary_key: bool = False) -> sa.Column[Any]:
    return sa.Column(
        "collection_id",
        sa.String(36),
        sa.ForeignKey("collections.id", ondelete="CASCADE"),
        primary_key=primary_key,
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        _ts("created_at"),
    )
    op.create_table(
        "documents",
        sa.Column("id", sa.String(36), primary_key=True),
        _collection_fk(),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("indexed_at", nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.UniqueConstraint("collection_id", "content_hash"),
    )
    op.create_index("ix_documents_collection_id", "documents", ["collection_id"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        _collection_fk(),
        sa.Column("document_id", sa.String(36), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
    )
    op.create_index("ix_jobs_collection_id", "jobs", ["collection_id"])
    op.create_index("ix_jobs_document_id", "jobs", ["document_id"])
    op.create_table(
        "index_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _collection_fk(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("embedding_model", sa.String(1024), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("chunking", sa.String(255), nullable=True),
        _ts("created_at"),
        _ts("activated_at", nullable=True),
        _ts("expires_at", nullable=True),
        sa.UniqueConstraint("collection_id", "version"),
    )
    op.create_index("ix_index_versions_collection_id", "index_versions", ["collection_id"])
    op.create_table(
        "folder_bindings",
        _collection_fk(primary_key=True),
        sa.Column("path", sa.Text(), nullable=False),
    )
    op.create_table(
        "folder_files",
        _collection_fk(primary_key=True),
        sa.Column("relpath", sa.String(1024), primary_key=True),
        sa.Column("document_id", sa.String(36), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("owned", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_folder_files_document_id", "folder_files", ["document_id"])
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(36), primary_key=True),
        _collection_fk(),
        sa.Column("cron", sa.String(255), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
    )
    op.create_index("ix_schedules_collection_id", "schedules", ["collection_id"])
    op.create_table(
        "schedule_claims",
        sa.Column(
            "schedule_id", sa.String(36), sa.ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("slot_at", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("claimed_by", sa.String(255), nullable=False),
        _ts("claimed_at"),
    )
    op.create_table(
        "reindex_runs",
        sa.Column("id", sa.String(36), primary_key=True),
        _collection_fk(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("schedule_id", sa.String(36), nullable=True),
        _ts("slot_at", nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        *(sa.Column(n, sa.Integer(), nullable=False) for n in ("added", "updated", "deleted", "unchanged", "failed")),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("score_current", sa.Float(), nullable=True),
        sa.Column("score_candidate", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
    )
    op.create_index("ix_reindex_runs_collection_id", "reindex_runs", ["collection_id"])
    op.create_table(
        "reindex_locks",
        _collection_fk(primary_key=True),
        sa.Column("run_id", sa.String(36), nullable=False),
        _ts("acquired_at"),
    )
    op.create_table(
        "golden_questions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _collection_fk(),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answers", sa.Text(), nullable=False),
        sa.Column("document", sa.String(512), nullable=False),
    )
    op.create_index("ix_golden_questions_collection_id", "golden_questions", ["collection_id"])


def downgrade() -> None:
    for table in (
        "golden_questions",
        "reindex_locks",
        "reindex_runs",
        "schedule_claims",
        "schedules",
        "folder_files",
        "folder_bindings",
        "index_versions",
        "jobs",
        "documents",
        "collections",
    ):
        op.drop_table(table)
