"""The user and session indexes hold only spans that have a user or a session.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Most gateway calls carry neither, and every index entry is work for the recording
process on each insert; a lookup by user or session (`user_id = ...`) still uses the
partial index on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("user_id", "session_id")


def upgrade() -> None:
    for column in _COLUMNS:
        name = f"ix_spans_{column}_start_time"
        where = sa.text(f"{column} IS NOT NULL")
        op.drop_index(name, table_name="spans")
        op.create_index(
            name,
            "spans",
            [column, "start_time"],
            sqlite_where=where,
            postgresql_where=where,
        )


def downgrade() -> None:
    for column in _COLUMNS:
        name = f"ix_spans_{column}_start_time"
        op.drop_index(name, table_name="spans")
        op.create_index(name, "spans", [column, "start_time"])
