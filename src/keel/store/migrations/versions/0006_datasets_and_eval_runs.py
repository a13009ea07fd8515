"""Datasets (immutable versions with a full copy of their items) and eval runs with results.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23

Written out in full rather than derived from keel.store.schema, so that this
revision keeps meaning the same thing after the models move on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def json_type() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "dataset_versions",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("author", sa.String(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name="pk_dataset_versions"),
    )
    op.create_table(
        "dataset_items",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(200), nullable=False),
        sa.Column("input", json_type(), nullable=False),
        sa.Column("expected", json_type(), nullable=True),
        sa.Column("context", json_type(), nullable=True),
        sa.Column("metadata", json_type(), nullable=True),
        sa.ForeignKeyConstraint(
            ["name", "version"],
            ["dataset_versions.name", "dataset_versions.version"],
            name="fk_dataset_items_name_dataset_versions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("name", "version", "position", name="pk_dataset_items"),
    )
    op.create_index(
        "ix_dataset_items_name_version_item_id",
        "dataset_items",
        ["name", "version", "item_id"],
        unique=True,
    )
    op.create_table(
        "eval_runs",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("suite", sa.String(200), nullable=True),
        sa.Column("variant", sa.String(200), nullable=True),
        sa.Column("dataset", sa.String(100), nullable=False),
        sa.Column("dataset_version", sa.Integer(), nullable=False),
        sa.Column("task", json_type(), nullable=False),
        sa.Column("evaluators", json_type(), nullable=False),
        sa.Column("repeat", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("metadata", json_type(), nullable=True),
        sa.Column("summary", json_type(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name="pk_eval_runs"),
    )
    op.create_index("ix_eval_runs_started_at", "eval_runs", ["started_at"])
    op.create_index("ix_eval_runs_suite_started_at", "eval_runs", ["suite", "started_at"])
    op.create_index("ix_eval_runs_dataset_started_at", "eval_runs", ["dataset", "started_at"])
    op.create_index("ix_eval_runs_name_started_at", "eval_runs", ["name", "started_at"])
    op.create_table(
        "eval_results",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("repetition", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(200), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Double(), nullable=True),
        sa.Column("cost_usd", sa.Double(), nullable=True),
        sa.Column("input_tokens", sa.BigInteger(), nullable=True),
        sa.Column("output_tokens", sa.BigInteger(), nullable=True),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("span_id", sa.String(16), nullable=True),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("verdicts", json_type(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["eval_runs.run_id"],
            name="fk_eval_results_run_id_eval_runs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "repetition", "item_id", name="pk_eval_results"),
    )


def downgrade() -> None:
    op.drop_table("eval_results")
    op.drop_index("ix_eval_runs_name_started_at", table_name="eval_runs")
    op.drop_index("ix_eval_runs_dataset_started_at", table_name="eval_runs")
    op.drop_index("ix_eval_runs_suite_started_at", table_name="eval_runs")
    op.drop_index("ix_eval_runs_started_at", table_name="eval_runs")
    op.drop_table("eval_runs")
    op.drop_index("ix_dataset_items_name_version_item_id", table_name="dataset_items")
    op.drop_table("dataset_items")
    op.drop_table("dataset_versions")
