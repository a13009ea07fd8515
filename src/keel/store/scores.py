"""The score repository: scores are few and written one at a time, straight to the database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, insert, select

from keel.core.scores import Score
from keel.store.schema import scores_table
from keel.store.spans import clean_text

_COLUMNS = tuple(column.name for column in scores_table.columns)


class ScoreRepository:
    """Adds and reads scores."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, score: Score) -> None:
        """Store `score` (text sanitised like span text); blocking: call it off the loop."""
        row: dict[str, Any] = {name: getattr(score, name) for name in _COLUMNS}
        for name, value in row.items():
            if isinstance(value, str):
                row[name] = clean_text(value)
        with self._engine.begin() as connection:
            connection.execute(insert(scores_table), row)

    def for_trace(self, trace_id: str) -> list[Score]:
        """The scores of a trace and of its spans, oldest first."""
        return self._select(scores_table.c.trace_id == trace_id)

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
