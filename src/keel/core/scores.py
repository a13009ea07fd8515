"""Scores: a number, a yes/no, a category or a text attached to a trace, a span or a session.

A thumbs-up from an end user, a rating from a reviewer, an evaluator's verdict: each is
one `Score` with a source (human, api, evaluator) and a data type. Numeric and boolean
scores keep their value in `value` (booleans as 1.0 / 0.0, so they average as a rate);
categorical and text scores keep it in `string_value`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

DataType = Literal["numeric", "boolean", "categorical", "text"]
Source = Literal["human", "api", "evaluator"]
DATA_TYPES: tuple[DataType, ...] = ("numeric", "boolean", "categorical", "text")
SOURCES: tuple[Source, ...] = ("human", "api", "evaluator")


@dataclass(frozen=True, slots=True)
class Score:
    """One score as stored; at least one of trace, span and session is set."""

    score_id: str
    name: str
    data_type: DataType
    value: float | None
    string_value: str | None
    trace_id: str | None
    span_id: str | None
    session_id: str | None
    source: Source
    comment: str | None
    author: str | None
    created_at: float

    @property
    def display_value(self) -> Any:
        """The value as the user gave it: a number, True/False, or the text."""
        if self.data_type == "boolean":
            return self.value == 1.0
        if self.data_type == "numeric":
            return self.value
        return self.string_value


def infer_data_type(value: Any) -> DataType | None:
    """The data type a bare value implies; None for a value no score can hold."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "numeric"
    if isinstance(value, str):
        return "categorical"
    return None


def check_value(data_type: DataType, value: Any) -> str | None:
    """Why `value` does not fit `data_type`, or None when it does."""
    if data_type == "boolean" and not isinstance(value, bool):
        return "a boolean score's value must be true or false"
    if data_type == "numeric":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "a numeric score's value must be a number"
        if value != value or value in (float("inf"), float("-inf")):
            return "a numeric score's value must be finite"
    if data_type in ("categorical", "text") and not isinstance(value, str):
        return f"a {data_type} score's value must be a string"
    return None
