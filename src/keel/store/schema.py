"""The relational schema: SQLAlchemy 2 typed models, dialect differences declared once.

Times are stored as float Unix epoch seconds (`DOUBLE PRECISION` on PostgreSQL,
8-byte `REAL` on SQLite), exactly as `keel.core.spans.Span` carries them: they
round-trip bit for bit, compare and index the same way on both dialects, and
a time window is a plain range scan on a composite index whose first column is
the equality filter (kind, alias, user, session, trace) and second is
`start_time`, so "newest first in a window" reads the index backwards and stops
at the limit.

Usage columns are NULL when the span has no usage (not the same as zero
tokens); `cost_usd` NULL means unpriced, never $0.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

# Stable constraint names so migrations can refer to them on every dialect.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def json_type() -> TypeEngine[Any]:
    """JSON on SQLite, JSONB on PostgreSQL; Python None is stored as SQL NULL."""
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class Base(DeclarativeBase):
    """Declarative base of every Keel table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class SpanRecord(Base):
    """One row per span; see `keel.core.spans.Span` for the meaning of each field."""

    __tablename__ = "spans"

    span_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    trace_id: Mapped[str] = mapped_column(String(32))
    parent_span_id: Mapped[str | None] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String)
    start_time: Mapped[float] = mapped_column(Double)
    end_time: Mapped[float] = mapped_column(Double)
    status: Mapped[str] = mapped_column(String)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)

    alias: Mapped[str | None] = mapped_column(String)
    provider: Mapped[str | None] = mapped_column(String)
    model: Mapped[str | None] = mapped_column(String)
    deployment: Mapped[str | None] = mapped_column(String)
    input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    output_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cache_read_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cache_write_tokens: Mapped[int | None] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int | None] = mapped_column(BigInteger)
    usage_estimated: Mapped[bool | None] = mapped_column(Boolean)
    cost_usd: Mapped[float | None] = mapped_column(Double)
    unpriced: Mapped[bool] = mapped_column(Boolean)
    price: Mapped[dict[str, float] | None] = mapped_column(json_type())
    latency_ms: Mapped[float] = mapped_column(Double)
    ttft_ms: Mapped[float | None] = mapped_column(Double)
    stream: Mapped[bool] = mapped_column(Boolean)

    user_id: Mapped[str | None] = mapped_column(String)
    session_id: Mapped[str | None] = mapped_column(String)
    tags: Mapped[list[str] | None] = mapped_column(json_type())
    # `metadata` is reserved by declarative for the MetaData object.
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", json_type())

    input: Mapped[Any] = mapped_column(json_type(), nullable=True)
    output: Mapped[Any] = mapped_column(json_type(), nullable=True)
    params: Mapped[dict[str, Any] | None] = mapped_column(json_type())
    attempts: Mapped[list[dict[str, Any]] | None] = mapped_column(json_type())
    attributes: Mapped[dict[str, Any] | None] = mapped_column(json_type())

    __table_args__ = (
        Index("ix_spans_kind_start_time", "kind", "start_time"),
        Index("ix_spans_start_time", "start_time"),
        Index("ix_spans_trace_id_start_time", "trace_id", "start_time"),
        Index("ix_spans_alias_start_time", "alias", "start_time"),
        # Partial: most calls carry no user or session, and an entry costs every insert.
        Index(
            "ix_spans_user_id_start_time",
            "user_id",
            "start_time",
            sqlite_where=text("user_id IS NOT NULL"),
            postgresql_where=text("user_id IS NOT NULL"),
        ),
        Index(
            "ix_spans_session_id_start_time",
            "session_id",
            "start_time",
            sqlite_where=text("session_id IS NOT NULL"),
            postgresql_where=text("session_id IS NOT NULL"),
        ),
    )


spans_table = cast(Table, SpanRecord.__table__)


class ScoreRecord(Base):
    """One row per score; see `keel.core.scores.Score`."""

    __tablename__ = "scores"

    score_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String)
    data_type: Mapped[str] = mapped_column(String)
    value: Mapped[float | None] = mapped_column(Double)
    string_value: Mapped[str | None] = mapped_column(Text)
    trace_id: Mapped[str | None] = mapped_column(String(32))
    span_id: Mapped[str | None] = mapped_column(String(16))
    session_id: Mapped[str | None] = mapped_column(String)
    source: Mapped[str] = mapped_column(String)
    comment: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[float] = mapped_column(Double)

    __table_args__ = (
        Index("ix_scores_trace_id", "trace_id"),
        Index("ix_scores_span_id", "span_id"),
        Index("ix_scores_session_id", "session_id"),
        Index("ix_scores_name_created_at", "name", "created_at"),
    )


scores_table = cast(Table, ScoreRecord.__table__)


class PromptVersionRecord(Base):
    """One immutable prompt version; see `keel.core.prompts.PromptVersion`."""

    __tablename__ = "prompt_versions"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(10))
    document: Mapped[dict[str, Any]] = mapped_column(json_type())
    content_hash: Mapped[str] = mapped_column(String(64))
    pins: Mapped[dict[str, int]] = mapped_column(json_type())
    author: Mapped[str | None] = mapped_column(String)
    message: Mapped[str | None] = mapped_column(Text)
    source_path: Mapped[str | None] = mapped_column(String)
    git_commit: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double)


class PromptLabelRecord(Base):
    """Where a label of a prompt points now: `targets` is `[{version, weight}, ...]`."""

    __tablename__ = "prompt_labels"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    label: Mapped[str] = mapped_column(String(50), primary_key=True)
    targets: Mapped[list[dict[str, Any]]] = mapped_column(json_type())
    updated_at: Mapped[float] = mapped_column(Double)


class PromptLabelEventRecord(Base):
    """One move of a label, oldest first by id; the newest id is the registry's revision."""

    __tablename__ = "prompt_label_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    label: Mapped[str] = mapped_column(String(50))
    action: Mapped[str] = mapped_column(String(20))
    from_targets: Mapped[list[dict[str, Any]] | None] = mapped_column(json_type())
    to_targets: Mapped[list[dict[str, Any]]] = mapped_column(json_type())
    undoes: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str | None] = mapped_column(String)
    at: Mapped[float] = mapped_column(Double)

    __table_args__ = (Index("ix_prompt_label_events_name_label", "name", "label"),)


class AuditEventRecord(Base):
    """Who changed what, when, from what to what; see `keel.core.audit.AuditEvent`."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Double)
    actor: Mapped[str | None] = mapped_column(String)
    action: Mapped[str] = mapped_column(String(50))
    target: Mapped[str] = mapped_column(String)
    detail: Mapped[dict[str, Any] | None] = mapped_column(json_type())

    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_target_at", "target", "at"),
    )


prompt_versions_table = cast(Table, PromptVersionRecord.__table__)
prompt_labels_table = cast(Table, PromptLabelRecord.__table__)
prompt_label_events_table = cast(Table, PromptLabelEventRecord.__table__)
audit_events_table = cast(Table, AuditEventRecord.__table__)


class DatasetVersionRecord(Base):
    """One immutable dataset version; its items are in dataset_items."""

    __tablename__ = "dataset_versions"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_count: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    author: Mapped[str | None] = mapped_column(String)
    message: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)


class DatasetItemRecord(Base):
    """One item of one dataset version, at its position; see `keel.core.datasets.DatasetItem`.

    Every version holds a full copy of its items: a version reads with one range scan and
    never changes, and datasets are small next to spans.
    """

    __tablename__ = "dataset_items"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[str] = mapped_column(String(200))
    input: Mapped[Any] = mapped_column(json_type())
    expected: Mapped[Any] = mapped_column(json_type(), nullable=True)
    context: Mapped[list[dict[str, str]] | None] = mapped_column(json_type())
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", json_type())

    __table_args__ = (
        ForeignKeyConstraint(
            ["name", "version"],
            ["dataset_versions.name", "dataset_versions.version"],
            ondelete="CASCADE",
        ),
        Index("ix_dataset_items_name_version_item_id", "name", "version", "item_id", unique=True),
    )


class EvalRunRecord(Base):
    """One eval run and what it pinned; see `keel.core.eval_runs.EvalRun`."""

    __tablename__ = "eval_runs"

    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    suite: Mapped[str | None] = mapped_column(String(200))
    variant: Mapped[str | None] = mapped_column(String(200))
    dataset: Mapped[str] = mapped_column(String(100))
    dataset_version: Mapped[int] = mapped_column(Integer)
    task: Mapped[dict[str, Any]] = mapped_column(json_type())
    evaluators: Mapped[list[dict[str, Any]]] = mapped_column(json_type())
    repeat: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[float] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", json_type())
    summary: Mapped[dict[str, Any] | None] = mapped_column(json_type())

    __table_args__ = (
        Index("ix_eval_runs_started_at", "started_at"),
        Index("ix_eval_runs_suite_started_at", "suite", "started_at"),
        Index("ix_eval_runs_dataset_started_at", "dataset", "started_at"),
        Index("ix_eval_runs_name_started_at", "name", "started_at"),
    )


class EvalResultRecord(Base):
    """One task call of a run on one item and repetition, with every verdict (JSON by
    evaluator name); see `keel.core.eval_runs.ItemResult`."""

    __tablename__ = "eval_results"

    run_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("eval_runs.run_id", ondelete="CASCADE"), primary_key=True
    )
    # (run, repetition, item) in this order: results page by repetition, then item.
    repetition: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    output: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[float | None] = mapped_column(Double)
    cost_usd: Mapped[float | None] = mapped_column(Double)
    input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    output_tokens: Mapped[int | None] = mapped_column(BigInteger)
    trace_id: Mapped[str | None] = mapped_column(String(32))
    span_id: Mapped[str | None] = mapped_column(String(16))
    started_at: Mapped[float | None] = mapped_column(Double)
    cached: Mapped[bool] = mapped_column(Boolean)
    verdicts: Mapped[dict[str, Any]] = mapped_column(json_type())


dataset_versions_table = cast(Table, DatasetVersionRecord.__table__)
dataset_items_table = cast(Table, DatasetItemRecord.__table__)
eval_runs_table = cast(Table, EvalRunRecord.__table__)
eval_results_table = cast(Table, EvalResultRecord.__table__)
