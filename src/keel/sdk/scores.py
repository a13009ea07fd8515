"""`keel.score()`: a judgement about a trace, a span or a session, sent in the background.

A score is `POST {host}/api/scores` with a JSON body (fields left out when None):
`{"id", "name", "value", "data_type", "trace_id", "span_id", "session_id", "source",
"comment", "author"}`. The id is made here (or given as `score_id`), so the exporter's
retries replace the score instead of adding it twice. `data_type` is inferred from the
value unless given: bool -> "boolean", int or float -> "numeric", str -> "categorical"
(pass `data_type="text"` for free text). It goes through the exporter's score queue
and retries, like spans; an invalid score is logged (once a minute), never raised.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from keel.core.scores import DATA_TYPES, SOURCES, infer_data_type
from keel.sdk.client import active_client
from keel.sdk.tracer import current_span_var

ScoreValue = bool | int | float | str


def _data_type(value: Any, data_type: str | None) -> str:
    if data_type is not None and data_type not in DATA_TYPES:
        raise ValueError(f"data_type {data_type!r} is not one of {', '.join(DATA_TYPES)}")
    inferred = infer_data_type(value)
    if inferred is None:
        raise ValueError(f"value must be a bool, a number or a string, not {type(value).__name__}")
    if inferred == "numeric" and not math.isfinite(value):
        raise ValueError(f"a numeric value must be finite, not {value!r}")
    if data_type is None or data_type == inferred:
        return inferred
    if data_type == "text" and inferred == "categorical":
        return "text"
    raise ValueError(f"a {type(value).__name__} value cannot be scored as {data_type!r}")


def score_body(
    name: str,
    value: ScoreValue,
    *,
    score_id: str | None = None,
    trace_id: str | None = None,
    span_id: str | None = None,
    session_id: str | None = None,
    data_type: str | None = None,
    source: str = "api",
    comment: str | None = None,
    author: str | None = None,
) -> bytes:
    """The JSON body of one score; ValueError saying what is wrong with the arguments."""
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string")
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {', '.join(SOURCES)}")
    if trace_id is None and span_id is None and session_id is None:
        raise ValueError("no target: pass trace_id, span_id or session_id, or call it in a span")
    fields: dict[str, Any] = {
        "id": score_id or uuid.uuid4().hex,
        "name": name,
        "value": value,
        "data_type": _data_type(value, data_type),
        "trace_id": trace_id,
        "span_id": span_id,
        "session_id": session_id,
        "source": source,
        "comment": comment,
        "author": author,
    }
    body = {key: field for key, field in fields.items() if field is not None}
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "replace")


def score(
    name: str,
    value: ScoreValue,
    *,
    score_id: str | None = None,
    trace_id: str | None = None,
    span_id: str | None = None,
    session_id: str | None = None,
    data_type: str | None = None,
    source: str = "api",
    comment: str | None = None,
    author: str | None = None,
) -> None:
    """Score a trace (default: the current one), a span or a session; never raises.

    Without `trace_id` the current trace is scored, unless only a `session_id` is
    given. A thumbs-up from an end user:
    `keel.score("thumbs", True, trace_id=answer_trace_id, source="human")`. Pass your
    own `score_id` to change a score later (the same id replaces it).
    """
    client = active_client()
    if client is None:
        return
    try:
        if trace_id is None and (session_id is None or span_id is not None):
            current = current_span_var.get()
            trace_id = None if current is None else current.trace_id
        body = score_body(
            name,
            value,
            score_id=score_id,
            trace_id=trace_id,
            span_id=span_id,
            session_id=session_id,
            data_type=data_type,
            source=source,
            comment=comment,
            author=author,
        )
    except ValueError as exc:
        client.log.warn(f"score:{exc}", "keel: score %r was not sent: %s", name, exc)
        return
    except Exception as exc:
        client.log.internal_error("preparing a score", exc)
        return
    client.exporter.add_score(body)
