"""The score repository: scores are few and written one at a time, straight to the database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, and_, delete, insert, or_, select

from keel.core.scores import Score
from keel.store.schema import scores_table, spans_table
from keel.store.spans import clean_text

_COLUMNS = tuple(column.name for column in scores_table.columns)


class ScoreRepository:
    """Adds and reads scores."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, score: Score) -> bool:
        """Store `score`, replacing a stored score with the same id; True when it is new.

        Text is sanitised like span text. A score of a span alone also gets the span's
        trace, when the span is stored already. Blocking: call it off the event loop.
        """
        row: dict[str, Any] = {name: getattr(score, name) for name in _COLUMNS}
        for name, value in row.items():
            if isinstance(value, str):
                row[name] = clean_text(value)
        with self._engine.begin() as connection:
            if row["trace_id"] is None and row["span_id"] is not None:
                spans = spans_table.c
                row["trace_id"] = connection.execute(
                    select(spans.trace_id).where(spans.span_id == row["span_id"])
                ).scalar()
            replaced = connection.execute(
                delete(scores_table).where(scores_table.c.score_id == row["score_id"])
            ).rowcount
            connection.execute(insert(scores_table), row)
        return not replaced

    def for_trace(self, trace_id: str) -> list[Score]:
        """The scores of a trace and of its spans, oldest first."""
        return self._select(trace_scores(trace_id))

    def for_session(self, session_id: str) -> list[Score]:
        """The scores attached to a session, oldest first."""
        return self._select(scores_table.c.session_id == session_id)

    def _select(self, condition: ColumnElement[bool]) -> list[Score]:
        with self._engine.connect() as connection:
            return select_scores(connection, condition)


def select_scores(connection: Connection, condition: ColumnElement[bool]) -> list[Score]:
    """The scores matching `condition`, oldest first."""
    query = select(scores_table).where(condition).order_by(scores_table.c.created_at)
    return [Score(**row) for row in connection.execute(query).mappings()]


def trace_scores(trace_id: str) -> ColumnElement[bool]:
    """Scores of the trace: attached to it, or to one of its spans alone (a score of a
    span that was posted before the span arrived has no trace of its own)."""
    c = scores_table.c
    spans = select(spans_table.c.span_id).where(spans_table.c.trace_id == trace_id)
    return or_(c.trace_id == trace_id, and_(c.trace_id.is_(None), c.span_id.in_(spans)))
