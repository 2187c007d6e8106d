"""documents.original_filename: the name as given, escaped, when the stored one
had to be cleaned (control and format characters, length).

Revision ID: 0004_original_filename
Revises: 0003_api_keys
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_original_filename"
down_revision: str | None = "0003_api_keys"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("original_filename", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("original_filename")
