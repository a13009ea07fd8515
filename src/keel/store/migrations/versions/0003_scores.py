"""Scores attached to traces, spans and sessions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = {
    "ix_scores_trace_id": ["trace_id"],
    "ix_scores_session_id": ["session_id"],
    "ix_scores_name_created_at": ["name", "created_at"],
}


def upgrade() -> None:
    op.create_table(
        "scores",
        sa.Column("score_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("data_type", sa.String(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("string_value", sa.Text(), nullable=True),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("span_id", sa.String(16), nullable=True),
        sa.Column("session_id", sa.String(), nullable=True),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("author", sa.String(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("score_id", name="pk_scores"),
    )
    for name, columns in _INDEXES.items():
        op.create_index(name, "scores", columns)


def downgrade() -> None:
    for name in _INDEXES:
        op.drop_index(name, table_name="scores")
    op.drop_table("scores")
