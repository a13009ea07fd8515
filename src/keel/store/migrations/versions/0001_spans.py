"""The spans table and the indexes that serve listing by time, alias, user, session and trace.

Revision ID: 0001
Revises:
Create Date: 2025-11-22

Written out in full rather than derived from keel.store.schema, so that this
revision keeps meaning the same thing after the models move on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = {
    "ix_spans_kind_start_time": ["kind", "start_time"],
    "ix_spans_start_time": ["start_time"],
    "ix_spans_trace_id_start_time": ["trace_id", "start_time"],
    "ix_spans_alias_start_time": ["alias", "start_time"],
    "ix_spans_user_id_start_time": ["user_id", "start_time"],
    "ix_spans_session_id_start_time": ["session_id", "start_time"],
}


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "spans",
        sa.Column("span_id", sa.String(16), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("parent_span_id", sa.String(16), nullable=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("start_time", sa.Double(), nullable=False),
        sa.Column("end_time", sa.Double(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("alias", sa.String(), nullable=True),
        sa.Column("provider", sa.String(), nullable=True),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("deployment", sa.String(), nullable=True),
        sa.Column("input_tokens", sa.BigInteger(), nullable=True),
        sa.Column("output_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cache_read_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cache_write_tokens", sa.BigInteger(), nullable=True),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=True),
        sa.Column("usage_estimated", sa.Boolean(), nullable=True),
        sa.Column("cost_usd", sa.Double(), nullable=True),
        sa.Column("unpriced", sa.Boolean(), nullable=False),
        sa.Column("price", _json(), nullable=True),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.Column("ttft_ms", sa.Double(), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=True),
        sa.Column("session_id", sa.String(), nullable=True),
        sa.Column("tags", _json(), nullable=True),
        sa.Column("metadata", _json(), nullable=True),
        sa.Column("input", _json(), nullable=True),
        sa.Column("output", _json(), nullable=True),
        sa.Column("params", _json(), nullable=True),
        sa.Column("attempts", _json(), nullable=True),
        sa.Column("attributes", _json(), nullable=True),
        sa.PrimaryKeyConstraint("span_id", name="pk_spans"),
    )
    for name, columns in _INDEXES.items():
        op.create_index(name, "spans", columns)


def downgrade() -> None:
    for name in _INDEXES:
        op.drop_index(name, table_name="spans")
    op.drop_table("spans")
