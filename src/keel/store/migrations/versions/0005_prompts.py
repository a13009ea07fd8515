"""The prompt registry: immutable versions, labels, label history; the audit log.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22

Written out in full rather than derived from keel.store.schema, so that this
revision keeps meaning the same thing after the models move on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def json_type() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "prompt_versions",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(10), nullable=False),
        sa.Column("document", json_type(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("pins", json_type(), nullable=False),
        sa.Column("author", sa.String(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("source_path", sa.String(), nullable=True),
        sa.Column("git_commit", sa.String(64), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name="pk_prompt_versions"),
    )
    op.create_table(
        "prompt_labels",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("label", sa.String(50), nullable=False),
        sa.Column("targets", json_type(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", "label", name="pk_prompt_labels"),
    )
    op.create_table(
        "prompt_label_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("label", sa.String(50), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("from_targets", json_type(), nullable=True),
        sa.Column("to_targets", json_type(), nullable=False),
        sa.Column("undoes", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(), nullable=True),
        sa.Column("at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prompt_label_events"),
    )
    op.create_index("ix_prompt_label_events_name_label", "prompt_label_events", ["name", "label"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("actor", sa.String(), nullable=True),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("detail", json_type(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_target_at", "audit_events", ["target", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_target_at", table_name="audit_events")
    op.drop_index("ix_audit_events_at", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_prompt_label_events_name_label", table_name="prompt_label_events")
    op.drop_table("prompt_label_events")
    op.drop_table("prompt_labels")
    op.drop_table("prompt_versions")
