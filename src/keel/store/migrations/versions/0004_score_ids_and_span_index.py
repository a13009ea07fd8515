"""Scores: ids chosen by clients (up to 64 characters), and an index on span_id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch: SQLite cannot alter a column's type in place (the table is copied).
    with op.batch_alter_table("scores") as batch:
        batch.alter_column("score_id", type_=sa.String(64), existing_nullable=False)
    op.create_index("ix_scores_span_id", "scores", ["span_id"])


def downgrade() -> None:
    op.drop_index("ix_scores_span_id", table_name="scores")
    with op.batch_alter_table("scores") as batch:
        batch.alter_column("score_id", type_=sa.String(32), existing_nullable=False)
