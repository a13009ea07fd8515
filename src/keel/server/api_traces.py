"""The read API's handlers: traces, one trace's tree and its spans, sessions, users.

Each handler reads the query string into the repository's terms (a window, a
`TraceFilter`, a page key), calls `TraceQueries` and shapes the answer as JSON-ready
data. The router runs handlers in a worker thread. Times are epoch seconds (floats),
latencies milliseconds, costs USD.
"""

from __future__ import annotations

import math
from typing import Any, Literal, cast

from keel.core.scores import Score
from keel.core.spans import Span
from keel.server.api_router import (
    ApiProblem,
    ApiRouter,
    BadParameter,
    Query,
    Request,
    encode_cursor,
)
from keel.store.queries import (
    SCORE_OPERATORS,
    GroupSummary,
    ScoreFilter,
    ScoreOperator,
    SpanNotInTrace,
    TraceFilter,
    TraceQueries,
    TraceSummary,
    Window,
)
from keel.store.trace_shape import Rollup, TreeSpan

PAGED_WINDOW = ("from", "to", "limit", "cursor")
TRACE_FILTERS = (
    "name", "user", "session", "tag", "model", "status", "min_latency_ms", "min_cost",
    "score", "q",
)  # fmt: skip
LIST_LIMIT = {"default": 50, "minimum": 1, "maximum": 500}
TREE_LIMIT = {"default": 1000, "minimum": 1, "maximum": 5000}
CHILDREN_LIMIT = {"default": 100, "minimum": 1, "maximum": 1000}
TURNS_LIMIT = {"default": 100, "minimum": 1, "maximum": 500}


class TraceRoutes:
    """GET /api/traces, /api/traces/{id}, /api/traces/{id}/spans, sessions and users."""

    def __init__(self, queries: TraceQueries) -> None:
        self._queries = queries

    def register(self, router: ApiRouter) -> None:
        """Add these routes to `router`."""
        router.get("/api/traces", self.list_traces, PAGED_WINDOW + TRACE_FILTERS)
        router.get("/api/traces/{trace_id}", self.trace, ("limit",))
        router.get("/api/traces/{trace_id}/spans", self.spans, ("parent", "limit", "cursor"))
        router.get("/api/sessions", self.sessions, PAGED_WINDOW)
        router.get("/api/sessions/{session_id}", self.session, ("limit", "cursor"))
        router.get("/api/users", self.users, PAGED_WINDOW)

    def list_traces(self, request: Request) -> dict[str, Any]:
        query = request.query
        window = _window(query)
        where = _trace_filter(query)
        limit = query.integer("limit", **LIST_LIMIT)
        page = self._queries.list_traces(window, where, limit, query.cursor("traces"))
        return {
            "data": [trace_summary_json(summary) for summary in page.items],
            "next_cursor": page.next_key and encode_cursor("traces", page.next_key),
        }

    def trace(self, request: Request) -> dict[str, Any]:
        trace_id = request.path["trace_id"]
        tree = self._queries.trace_tree(trace_id, request.query.integer("limit", **TREE_LIMIT))
        if tree is None:
            raise _no_trace(trace_id)
        body = _trace_header(tree.root, tree.totals)
        body.update(
            root_span_id=tree.root.span_id,
            metadata=tree.root.metadata,
            attributes=tree.root.attributes,
            span_count=tree.totals.spans,
            returned=len(tree.spans),
            truncated=len(tree.spans) < tree.totals.spans,
            scores=[score_json(score) for score in tree.scores],
            spans=[tree_span_json(node) for node in tree.spans],
        )
        return body

    def spans(self, request: Request) -> dict[str, Any]:
        query = request.query
        trace_id = request.path["trace_id"]
        parent = query.text("parent")
        limit = query.integer("limit", **CHILDREN_LIMIT)
        try:
            page = self._queries.children(trace_id, parent, limit, query.cursor("spans"))
        except SpanNotInTrace as exc:
            raise ApiProblem(404, "Not Found", f"{exc}; the tree lists its span ids.") from None
        if page is None:
            raise _no_trace(trace_id)
        return {
            "data": [tree_span_json(node) for node in page.items],
            "next_cursor": page.next_key and encode_cursor("spans", page.next_key),
        }

    def sessions(self, request: Request) -> dict[str, Any]:
        query = request.query
        window = _window(query)
        limit = query.integer("limit", **LIST_LIMIT)
        page = self._queries.sessions(window, limit, query.cursor("sessions"))
        return {
            "data": [session_json(group) for group in page.items],
            "next_cursor": page.next_key and encode_cursor("sessions", page.next_key),
        }

    def session(self, request: Request) -> dict[str, Any]:
        query = request.query
        session_id = request.path["session_id"]
        limit = query.integer("limit", **TURNS_LIMIT)
        detail = self._queries.session(session_id, limit, query.cursor("turns"))
        if detail is None:
            raise ApiProblem(404, "Not Found", f"No span carries session id {session_id!r}.")
        body = session_json(detail.summary)
        body.update(
            scores=[score_json(score) for score in detail.scores],
            turns=[turn_json(turn) for turn in detail.turns.items],
            next_cursor=detail.turns.next_key and encode_cursor("turns", detail.turns.next_key),
        )
        return body

    def users(self, request: Request) -> dict[str, Any]:
        query = request.query
        window = _window(query)
        limit = query.integer("limit", **LIST_LIMIT)
        page = self._queries.users(window, limit, query.cursor("users"))
        return {
            "data": [user_json(group) for group in page.items],
            "next_cursor": page.next_key and encode_cursor("users", page.next_key),
        }


def _no_trace(trace_id: str) -> ApiProblem:
    return ApiProblem(404, "Not Found", f"No trace or span with id {trace_id!r}.")


# --- reading the query string -----------------------------------------------------------


def _window(query: Query) -> Window:
    start = query.time("from", required=True)
    end = query.time("to", required=True)
    assert start is not None and end is not None
    if end < start:
        raise BadParameter("to", "is before 'from': the window is inverted")
    return start, end


def _trace_filter(query: Query) -> TraceFilter:
    status = query.choice("status", ("ok", "error"))
    return TraceFilter(
        name=query.text("name"),
        user=query.text("user"),
        session=query.text("session"),
        tags=tuple(query.texts("tag")),
        model=query.text("model"),
        status=cast(Literal["ok", "error"] | None, status),
        min_latency_ms=query.number("min_latency_ms"),
        min_cost=query.number("min_cost"),
        scores=tuple(score_filter(text) for text in query.texts("score")),
        text=query.text("q"),
    )


def score_filter(text: str) -> ScoreFilter:
    """`name:operator:value` -> ScoreFilter; true/false are 1/0, "quoted" is always text."""
    name, _, rest = text.partition(":")
    op, _, raw = rest.partition(":")
    example = "e.g. thumbs:eq:true or accuracy:gte:0.8"
    if not name or not raw:
        raise BadParameter("score", f"{text!r} is not name:operator:value ({example})")
    if op not in SCORE_OPERATORS:
        raise BadParameter(
            "score", f"unknown operator {op!r} in {text!r}: use {', '.join(SCORE_OPERATORS)}"
        )
    value: float | str
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        value = raw[1:-1]
    elif raw.lower() in ("true", "false"):
        value = 1.0 if raw.lower() == "true" else 0.0
    else:
        try:
            value = float(raw)
        except ValueError:
            value = raw
        if isinstance(value, float) and not math.isfinite(value):
            value = raw
    if isinstance(value, str) and op not in ("eq", "ne"):
        raise BadParameter("score", f"{op} compares numbers and {raw!r} is not one ({example})")
    return ScoreFilter(name, cast(ScoreOperator, op), value)


# --- shaping the answers ----------------------------------------------------------------


def span_json(span: Span) -> dict[str, Any]:
    """Everything recorded for a span."""
    return {
        "span_id": span.span_id,
        "trace_id": span.trace_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "kind": span.kind,
        "start_time": span.start_time,
        "end_time": span.end_time,
        "latency_ms": span.latency_ms,
        "status": span.status,
        "status_code": span.status_code,
        "error": span.error,
        "alias": span.alias,
        "provider": span.provider,
        "model": span.model,
        "deployment": span.deployment,
        "usage": span.usage.as_dict() if span.usage else None,
        "cost_usd": span.cost_usd,
        "unpriced": span.unpriced,
        "price": span.price,
        "ttft_ms": span.ttft_ms,
        "stream": span.stream,
        "user": span.user_id,
        "session": span.session_id,
        "tags": span.tags,
        "metadata": span.metadata,
        "input": span.input,
        "output": span.output,
        "params": span.params,
        "attempts": [attempt.as_dict() for attempt in span.attempts],
        "attributes": span.attributes,
    }


def rollup_json(rollup: Rollup) -> dict[str, Any]:
    """Totals over a trace or a subtree."""
    return {
        "spans": rollup.spans,
        "start_time": rollup.start_time,
        "end_time": rollup.end_time,
        "latency_ms": rollup.latency_ms,
        "input_tokens": rollup.input_tokens,
        "output_tokens": rollup.output_tokens,
        "cost_usd": rollup.cost_usd,
        "unpriced": rollup.unpriced,
        "errors": rollup.errors,
    }


def score_json(score: Score) -> dict[str, Any]:
    """A score as the client gave it (`value` a number, a boolean or a string)."""
    return {
        "id": score.score_id,
        "name": score.name,
        "value": score.display_value,
        "data_type": score.data_type,
        "source": score.source,
        "trace_id": score.trace_id,
        "span_id": score.span_id,
        "session_id": score.session_id,
        "comment": score.comment,
        "author": score.author,
        "created_at": score.created_at,
    }


def _trace_header(root: Span, totals: Rollup) -> dict[str, Any]:
    return {
        "trace_id": root.trace_id,
        "name": root.name,
        "start_time": root.start_time,
        "end_time": totals.end_time,
        "latency_ms": root.latency_ms,
        "status": "error" if totals.errors else "ok",
        "user": root.user_id,
        "session": root.session_id,
        "tags": root.tags,
        "totals": rollup_json(totals),
    }


def trace_summary_json(summary: TraceSummary) -> dict[str, Any]:
    """A trace in a list: its root span, totals and scores."""
    body = _trace_header(summary.root, summary.totals)
    body["root"] = span_json(summary.root)
    body["scores"] = [score_json(score) for score in summary.scores]
    return body


def turn_json(summary: TraceSummary) -> dict[str, Any]:
    """One trace of a session as a turn of the conversation."""
    root = summary.root
    return {
        "trace_id": root.trace_id,
        "root_span_id": root.span_id,
        "name": root.name,
        "start_time": root.start_time,
        "end_time": summary.totals.end_time,
        "latency_ms": root.latency_ms,
        "status": "error" if summary.totals.errors else "ok",
        "input": root.input,
        "output": root.output,
        "totals": rollup_json(summary.totals),
        "scores": [score_json(score) for score in summary.scores],
    }


def tree_span_json(node: TreeSpan) -> dict[str, Any]:
    """A span placed in its tree: depth, child count, subtree rollup."""
    body = span_json(node.span)
    body.update(depth=node.depth, child_count=node.child_count, subtree=rollup_json(node.subtree))
    return body


def _activity_json(group: GroupSummary) -> dict[str, Any]:
    return {
        "traces": group.traces,
        "spans": group.spans,
        "input_tokens": group.input_tokens,
        "output_tokens": group.output_tokens,
        "cost_usd": group.cost_usd,
        "first_seen": group.first_seen,
        "last_seen": group.last_seen,
    }


def session_json(group: GroupSummary) -> dict[str, Any]:
    """A session's activity."""
    return {"session_id": group.key, "user": group.user_id, **_activity_json(group)}


def user_json(group: GroupSummary) -> dict[str, Any]:
    """A user's activity."""
    return {"user": group.key, **_activity_json(group)}
