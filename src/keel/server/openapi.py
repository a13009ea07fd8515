"""The OpenAPI 3.1 document of the REST API under /api, built as a dict.

Served at `GET /api/openapi.json`. Query parameter bounds come from the handlers'
own tables (`keel.server.api_traces`) and the score body's schema from its pydantic
model, so the document cannot disagree with them; a test compares its paths and
parameters with the router's route table.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from keel.server.api_scores import ScoreBody
from keel.server.api_traces import CHILDREN_LIMIT, LIST_LIMIT, TREE_LIMIT, TURNS_LIMIT
from keel.server.openapi_evals import eval_paths, eval_schemas
from keel.server.openapi_parts import EPOCH, JSON, TEXT, nullable, path_param, query, ref
from keel.server.openapi_prompts import prompt_paths, prompt_schemas

_DESCRIPTION = """\
Read what Keel recorded: traces (filtered, paginated), one trace as a tree, sessions as
conversations, users; attach scores. Manage prompts: push versions, move labels, roll
out gradually, roll back; read the audit log. Keep datasets as immutable versions (from
files or from traces) and record eval runs with their results.

- **Times** in requests (`from`, `to`) are epoch seconds or ISO 8601 (UTC unless an
  offset is given; write `+` as `%2B`). Times in responses are **epoch seconds** as
  floats; latencies are milliseconds; costs are USD.
- **Auth**: when Keel has a master key (`auth.master_key`), every endpoint needs
  `Authorization: Bearer <master key>`.
- **Pages**: lists return `next_cursor`, an opaque token; pass it back as `cursor` with
  the same other parameters for the next page; `null` on the last page. Pages are keyed
  on (time, id), so nothing recorded while a client pages shifts them.
- **Errors** are RFC 9457 problem documents (`application/problem+json`); a bad query
  parameter is a 400 whose `errors[].parameter` names it, and unknown parameters are
  refused rather than ignored.
"""


def _object(properties: dict[str, JSON], description: str = "") -> JSON:
    schema: JSON = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
    }
    if description:
        schema["description"] = description
    return schema


def _page(item: str, description: str) -> JSON:
    return _object(
        {
            "data": {"type": "array", "items": ref(item)},
            "next_cursor": {
                **nullable({"type": "string"}),
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
        },
        description,
    )


_TEXT_OR_NULL = nullable(TEXT)
_INT = {"type": "integer"}
_MS = {"type": "number", "description": "Milliseconds."}
_USD = {"type": "number", "description": "USD."}
_ANY_OBJECT = {"type": "object", "additionalProperties": True}
_ANY: JSON = {"description": "Any JSON value, as recorded."}


def _schemas() -> dict[str, JSON]:
    rollup = _object(
        {
            "spans": _INT,
            "start_time": EPOCH,
            "end_time": EPOCH,
            "latency_ms": {**_MS, "description": "From the first start to the last end."},
            "input_tokens": _INT,
            "output_tokens": _INT,
            "cost_usd": _USD,
            "unpriced": {
                "type": "boolean",
                "description": "Some span has usage but no price: cost_usd is a lower bound.",
            },
            "errors": {"type": "integer", "description": "Spans with status error."},
        },
        "Totals over a whole trace, or over one span and everything below it.",
    )
    span_properties: dict[str, JSON] = {
        "span_id": TEXT,
        "trace_id": TEXT,
        "parent_span_id": _TEXT_OR_NULL,
        "name": TEXT,
        "kind": {**TEXT, "description": "span, generation, embedding, retrieval, tool..."},
        "start_time": EPOCH,
        "end_time": EPOCH,
        "latency_ms": _MS,
        "status": {"type": "string", "enum": ["ok", "error"]},
        "status_code": nullable(_INT),
        "error": _TEXT_OR_NULL,
        "alias": {**_TEXT_OR_NULL, "description": "The model alias a gateway call asked for."},
        "provider": _TEXT_OR_NULL,
        "model": {**_TEXT_OR_NULL, "description": "The upstream model."},
        "deployment": _TEXT_OR_NULL,
        "usage": nullable(ref("Usage")),
        "cost_usd": {**nullable({"type": "number"}), "description": "USD; null: unpriced."},
        "unpriced": {"type": "boolean"},
        "price": nullable(
            {
                "type": "object",
                "additionalProperties": {"type": "number"},
                "description": "The price snapshot used, USD per 1M tokens by kind.",
            }
        ),
        "ttft_ms": {**nullable({"type": "number"}), "description": "Time to first token, ms."},
        "stream": {"type": "boolean"},
        "user": _TEXT_OR_NULL,
        "session": _TEXT_OR_NULL,
        "tags": {"type": "array", "items": TEXT},
        "metadata": _ANY_OBJECT,
        "input": _ANY,
        "output": _ANY,
        "params": _ANY_OBJECT,
        "attempts": {"type": "array", "items": ref("Attempt")},
        "attributes": _ANY_OBJECT,
    }
    trace_header: dict[str, JSON] = {
        "trace_id": TEXT,
        "name": {**TEXT, "description": "The root span's name."},
        "start_time": {**EPOCH, "description": "The root span's start, epoch seconds."},
        "end_time": {**EPOCH, "description": "The last end of any span, epoch seconds."},
        "latency_ms": {**_MS, "description": "The root span's latency."},
        "status": {
            "type": "string",
            "enum": ["ok", "error"],
            "description": "error when any span of the trace failed.",
        },
        "user": _TEXT_OR_NULL,
        "session": _TEXT_OR_NULL,
        "tags": {"type": "array", "items": TEXT},
        "totals": ref("Rollup"),
    }
    scores = {"type": "array", "items": ref("Score")}
    activity: dict[str, JSON] = {
        "traces": _INT,
        "spans": {**_INT, "description": "Every span of those traces."},
        "input_tokens": _INT,
        "output_tokens": _INT,
        "cost_usd": _USD,
        "first_seen": EPOCH,
        "last_seen": EPOCH,
    }
    score_body = ScoreBody.model_json_schema()
    score_body["properties"]["trace_id"]["anyOf"][0]["pattern"] = "^[0-9a-f]{32}$"
    score_body["properties"]["span_id"]["anyOf"][0]["pattern"] = "^[0-9a-f]{16}$"
    score_body["description"] = (
        "A score on a trace, a span or a session (give at least one). data_type defaults "
        "from the value: a boolean is boolean, a number numeric, a string categorical."
    )
    return {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem document.",
            "properties": {
                "type": TEXT,
                "title": TEXT,
                "status": _INT,
                "detail": TEXT,
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "parameter": {**TEXT, "description": "The query parameter."},
                            "field": {**TEXT, "description": "The body field."},
                            "message": TEXT,
                        },
                        "required": ["message"],
                    },
                },
            },
            "required": ["type", "title", "status", "detail"],
        },
        "Usage": _object(
            {
                "input_tokens": _INT,
                "output_tokens": _INT,
                "cache_read_tokens": _INT,
                "cache_write_tokens": _INT,
                "reasoning_tokens": _INT,
                "estimated": {"type": "boolean", "description": "Counted by Keel."},
            }
        ),
        "Attempt": _object(
            {
                "deployment": TEXT,
                "provider": TEXT,
                "model": TEXT,
                "outcome": {**TEXT, "description": "ok, or what went wrong."},
                "status": nullable(_INT),
                "latency_ms": _MS,
                "retry_after_s": nullable({"type": "number"}),
            }
        ),
        "Span": _object(span_properties, "Everything recorded for one span."),
        "Rollup": rollup,
        "Score": _object(
            {
                "id": TEXT,
                "name": TEXT,
                "value": {"type": ["number", "boolean", "string"]},
                "data_type": {
                    "type": "string",
                    "enum": ["numeric", "boolean", "categorical", "text"],
                },
                "source": {"type": "string", "enum": ["human", "api", "evaluator"]},
                "trace_id": _TEXT_OR_NULL,
                "span_id": _TEXT_OR_NULL,
                "session_id": _TEXT_OR_NULL,
                "comment": _TEXT_OR_NULL,
                "author": _TEXT_OR_NULL,
                "created_at": EPOCH,
            }
        ),
        "TraceSummary": _object(
            {**trace_header, "root": ref("Span"), "scores": scores},
            "A trace in a list: its root span (the span without a parent, or the earliest "
            "span while no root has arrived), the trace's totals and its scores.",
        ),
        "TraceList": _page("TraceSummary", "Traces, newest first."),
        "TreeSpan": _object(
            {
                **span_properties,
                "depth": {**_INT, "description": "0 for a root."},
                "child_count": {**_INT, "description": "Children, loaded or not."},
                "subtree": ref("Rollup"),
            },
            "A span placed in its trace's tree, with the rollup of its subtree.",
        ),
        "TraceTree": _object(
            {
                **trace_header,
                "root_span_id": TEXT,
                "metadata": _ANY_OBJECT,
                "attributes": _ANY_OBJECT,
                "span_count": _INT,
                "returned": _INT,
                "truncated": {
                    "type": "boolean",
                    "description": "Not every span is in `spans`: load the children of a "
                    "span whose child_count exceeds those present with "
                    "/api/traces/{trace_id}/spans?parent=.",
                },
                "scores": scores,
                "spans": {
                    "type": "array",
                    "items": ref("TreeSpan"),
                    "description": "The tree, flat and breadth-first (parents before their "
                    "children, siblings in start order); nest them by parent_span_id.",
                },
            },
            "One trace, top-down.",
        ),
        "SpanPage": _page("TreeSpan", "Children of one span, in start order."),
        "SessionSummary": _object(
            {"session_id": TEXT, "user": _TEXT_OR_NULL, **activity},
            "A session's activity in the window.",
        ),
        "SessionList": _page("SessionSummary", "Sessions, most recently active first."),
        "Turn": _object(
            {
                "trace_id": {**TEXT, "description": "Link to /api/traces/{trace_id}."},
                "root_span_id": TEXT,
                "name": TEXT,
                "start_time": EPOCH,
                "end_time": EPOCH,
                "latency_ms": {**_MS, "description": "The root span's latency."},
                "status": {"type": "string", "enum": ["ok", "error"]},
                "input": {**_ANY, "description": "The root span's input."},
                "output": {**_ANY, "description": "The root span's output."},
                "totals": ref("Rollup"),
                "scores": scores,
            },
            "One trace of a session: a turn of the conversation.",
        ),
        "Session": _object(
            {
                "session_id": TEXT,
                "user": _TEXT_OR_NULL,
                **activity,
                "scores": {**scores, "description": "Scores attached to the session."},
                "turns": {"type": "array", "items": ref("Turn")},
                "next_cursor": {
                    **nullable(TEXT),
                    "description": "Pass as `cursor` for the next turns.",
                },
            },
            "A session as a conversation: its traces in start order.",
        ),
        "UserSummary": _object({"user": TEXT, **activity}, "A user's activity in the window."),
        "UserList": _page("UserSummary", "Users, most recently active first."),
        "ScoreCreate": score_body,
        "ScoreCreated": _object(
            {"id": TEXT, "data_type": {"type": "string"}}, "The stored score's id and type."
        ),
    }


def _limit(bounds: dict[str, int], what: str) -> JSON:
    return query("limit", {"type": "integer", **bounds}, f"How many {what} to return.")


_CURSOR = query("cursor", TEXT, "The `next_cursor` of the previous page.")
_WINDOW = [
    query("from", TEXT, "Window start (inclusive): epoch seconds or ISO 8601.", required=True),
    query("to", TEXT, "Window end (exclusive): epoch seconds or ISO 8601.", required=True),
]
_TRACE_FILTERS = [
    query("name", TEXT, "The root span's name."),
    query("user", TEXT, "Some span of the trace carries this user id."),
    query("session", TEXT, "Some span of the trace carries this session id."),
    query(
        "tag",
        {"type": "array", "items": TEXT},
        "Repeatable; every tag must be on some span of the trace.",
        style="form",
        explode=True,
    ),
    query("model", TEXT, "Some span used this model alias or upstream model."),
    query(
        "status",
        {"type": "string", "enum": ["ok", "error"]},
        "error: some span of the trace failed; ok: none did.",
    ),
    query("min_latency_ms", {"type": "number", "minimum": 0}, "The root span's latency."),
    query("min_cost", {"type": "number", "minimum": 0}, "The trace's total cost, USD."),
    query(
        "score",
        {
            "type": "array",
            "items": {"type": "string", "pattern": "^[^:]+:(eq|ne|gt|gte|lt|lte):.+$"},
        },
        "Repeatable, all must match: `name:operator:value` with eq, ne, gt, gte, lt, lte, "
        "e.g. `thumbs:eq:true`, `accuracy:gte:0.8`, `tone:eq:friendly`. true/false and "
        'numbers compare numeric and boolean scores; text (or "quoted") compares '
        "categorical and text scores with eq and ne. Matches a score attached to the trace.",
        style="form",
        explode=True,
    ),
    query(
        "q",
        TEXT,
        "Text search: a case-insensitive substring of the JSON text of the input or output "
        "of a span of the trace that started in the window (SQLite folds ASCII letters "
        "only). Scanned newest first, no full-text index: a text found in few spans costs "
        "a scan of the window.",
    ),
]


def _responses(ok: JSON, description: str, *problems: int) -> JSON:
    out: JSON = {
        "200": {"description": description, "content": {"application/json": {"schema": ok}}}
    }
    for status in (400, 401, *problems):
        out[str(status)] = {"$ref": f"#/components/responses/{_PROBLEMS[status][0]}"}
    return out


_PROBLEMS = {
    400: ("BadRequest", "A query parameter is missing or wrong; errors[].parameter names it."),
    401: ("Unauthorized", "The master key is configured and was not sent."),
    404: ("NotFound", "No such trace, span or session."),
    422: ("InvalidScore", "The score was not stored; errors[].field names what is wrong."),
}


def _paths() -> JSON:
    trace_id = path_param("trace_id", "A trace id, or the id of any span of the trace.")
    return {
        "/api/traces": {
            "get": {
                "operationId": "listTraces",
                "summary": "Traces started in a window, newest first, filtered.",
                "parameters": [*_WINDOW, _limit(LIST_LIMIT, "traces"), _CURSOR, *_TRACE_FILTERS],
                "responses": _responses(ref("TraceList"), "One page of traces."),
            }
        },
        "/api/traces/{trace_id}": {
            "get": {
                "operationId": "getTrace",
                "summary": "One trace as a tree with subtree rollups, top-down.",
                "description": "At most `limit` spans, breadth-first; load the rest with "
                "/api/traces/{trace_id}/spans?parent=.",
                "parameters": [trace_id, _limit(TREE_LIMIT, "spans")],
                "responses": _responses(ref("TraceTree"), "The trace.", 404),
            }
        },
        "/api/traces/{trace_id}/spans": {
            "get": {
                "operationId": "listSpanChildren",
                "summary": "The children of one span (the trace's roots without parent).",
                "parameters": [
                    trace_id,
                    query("parent", TEXT, "The span whose children to list."),
                    _limit(CHILDREN_LIMIT, "spans"),
                    _CURSOR,
                ],
                "responses": _responses(ref("SpanPage"), "One page of children.", 404),
            }
        },
        "/api/sessions": {
            "get": {
                "operationId": "listSessions",
                "summary": "Sessions with spans started in a window, most recently active first.",
                "parameters": [*_WINDOW, _limit(LIST_LIMIT, "sessions"), _CURSOR],
                "responses": _responses(ref("SessionList"), "One page of sessions."),
            }
        },
        "/api/sessions/{session_id}": {
            "get": {
                "operationId": "getSession",
                "summary": "A session as a conversation: its traces in start order, its scores.",
                "parameters": [
                    path_param("session_id", "The session id (percent-encode a '/')."),
                    _limit(TURNS_LIMIT, "turns"),
                    _CURSOR,
                ],
                "responses": _responses(ref("Session"), "The session.", 404),
            }
        },
        "/api/users": {
            "get": {
                "operationId": "listUsers",
                "summary": "Users with spans started in a window, most recently active first.",
                "parameters": [*_WINDOW, _limit(LIST_LIMIT, "users"), _CURSOR],
                "responses": _responses(ref("UserList"), "One page of users."),
            }
        },
        "/api/scores": {
            "post": {
                "operationId": "createScore",
                "summary": "Attach a score to a trace, a span or a session.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref("ScoreCreate")}},
                },
                "responses": {
                    "201": {
                        "description": "Stored.",
                        "content": {"application/json": {"schema": ref("ScoreCreated")}},
                    },
                    "200": {
                        "description": "Stored in place of the score with the same id.",
                        "content": {"application/json": {"schema": ref("ScoreCreated")}},
                    },
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "413": {"$ref": "#/components/responses/TooLarge"},
                    "422": {"$ref": "#/components/responses/InvalidScore"},
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document.",
                "responses": _responses(_ANY_OBJECT, "The OpenAPI 3.1 document."),
            }
        },
    }


def openapi_document() -> JSON:
    """The whole OpenAPI 3.1 document of /api."""
    try:
        package_version = version("keel")
    except PackageNotFoundError:
        package_version = "0"
    problem = {"application/problem+json": {"schema": ref("Problem")}}
    responses = {
        name: {"description": text, "content": problem} for name, text in _PROBLEMS.values()
    }
    responses["TooLarge"] = {"description": "The body is too large.", "content": problem}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Keel API", "version": package_version, "description": _DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": [{"masterKey": []}],
        "paths": {**_paths(), **prompt_paths(), **eval_paths()},
        "components": {
            "schemas": {**_schemas(), **prompt_schemas(), **eval_schemas()},
            "responses": responses,
            "securitySchemes": {
                "masterKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Keel's master key (auth.master_key); not required when "
                    "none is configured.",
                }
            },
        },
    }
