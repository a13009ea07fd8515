"""The span repository: `Span` <-> `spans` row mapping, text sanitising, and the read queries.

Sanitising (applied by `span_to_row` to every string column and recursively to
every string and key inside JSON payloads): PostgreSQL refuses NUL in text and
JSONB, and no UTF-8 encoder accepts lone surrogates (orjson, psycopg and
sqlite3 all raise), so one such character would lose the whole span. Instead
NUL becomes U+2400 "␀" (visible, and says what was there) and a lone surrogate
becomes U+FFFD; a surrogate pair split into two code points is joined back into
the character it encodes. Bytes are decoded as UTF-8 with replacement, ints
outside 64 bits become strings, other objects go through orjson (dataclasses,
datetimes, ...) or `str()`. Everything else is stored unchanged, so a clean span
reads back equal to what was emitted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import Engine, Select, select

from keel.core.spans import Attempt, Span
from keel.core.usage import Usage
from keel.store.schema import spans_table

_NUL = "\x00"
_NUL_SYMBOL = "\u2400"
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def clean_text(value: str) -> str:
    """`value` safe for every database and encoder: no NUL, no lone surrogates."""
    if _NUL in value:
        value = value.replace(_NUL, _NUL_SYMBOL)
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # surrogatepass keeps the halves; decoding joins valid pairs and turns the rest into U+FFFD.
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value


def clean_json(value: Any) -> Any:
    """`value` as JSON-ready data, every string and key sanitised (see the module docstring)."""
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _UINT64_MAX else str(value)
    if isinstance(value, Mapping):
        return {
            clean_text(k if isinstance(k, str) else str(k)): clean_json(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [clean_json(item) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return clean_text(bytes(value).decode("utf-8", "replace"))
    try:
        converted = orjson.loads(orjson.dumps(value, default=str))
    except (orjson.JSONEncodeError, TypeError):
        return clean_text(str(value))
    return clean_json(converted)


def _text(value: object) -> str | None:
    if value is None:
        return None
    return clean_text(value if isinstance(value, str) else str(value))


ROW_COLUMNS = (
    "span_id", "trace_id", "parent_span_id", "name", "kind", "start_time", "end_time",
    "status", "status_code", "error", "alias", "provider", "model", "deployment",
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "reasoning_tokens", "usage_estimated", "cost_usd", "unpriced", "price", "latency_ms",
    "ttft_ms", "stream", "user_id", "session_id", "tags", "metadata", "input", "output",
    "params", "attempts", "attributes",
)  # fmt: skip


def json_text(value: Any) -> str | None:
    """`value` as JSON text for a JSON/JSONB column (None stays SQL NULL), sanitised.

    The common clean payload costs one orjson call: orjson refuses lone
    surrogates, non-string keys and oversized ints and spells NUL as \\u0000, so
    only a refusal or a NUL sends the value through the slow cleaning walk.
    """
    if value is None:
        return None
    try:
        encoded = orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        encoded = orjson.dumps(clean_json(value))
    else:
        if b"\\u0000" in encoded:
            encoded = orjson.dumps(clean_json(value))
    return encoded.decode()


# The positional record of a span: how spans travel to the recording process (one JSON
# array per span, `keel.store.span_codec`) and what rows are made from. Positional, not
# orjson's dataclass support: 1.6 us a span instead of 6.6 us on the event loop. Add new
# fields at the end and bump the version.
RECORD_VERSION = 1
RECORD_LENGTH = 30
_ATTEMPT_KEYS = (
    "deployment", "provider", "model", "outcome", "status", "latency_ms", "retry_after_s",
)  # fmt: skip
_NO_USAGE = (None,) * 6


def span_record(span: Span) -> tuple[Any, ...]:
    """`span` as its positional record: the version, then every field in a fixed order."""
    usage = span.usage
    return (
        RECORD_VERSION, span.trace_id, span.span_id, span.name, span.kind, span.start_time,
        span.end_time, span.parent_span_id, span.status, span.status_code, span.error,
        span.alias, span.provider, span.model, span.deployment,
        None if usage is None else (
            usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
            usage.cache_write_tokens, usage.reasoning_tokens, usage.estimated,
        ),
        span.cost_usd, span.unpriced, span.price, span.ttft_ms, span.stream, span.user_id,
        span.session_id, span.tags, span.metadata, span.input, span.output, span.params,
        [
            (a.deployment, a.provider, a.model, a.outcome, a.status, a.latency_ms,
             a.retry_after_s)
            for a in span.attempts
        ],
        span.attributes,
    )  # fmt: skip


def check_record(record: Any) -> None:
    """ValueError unless `record` is a span record of this version (`span_record`'s shape:
    the version, then `Span`'s fields in their declared order)."""
    if not isinstance(record, list | tuple) or len(record) != RECORD_LENGTH:
        raise ValueError("not a span record of this Keel version")
    if record[0] != RECORD_VERSION:
        raise ValueError("not a span record of this Keel version")


def record_to_row(record: Sequence[Any]) -> tuple[Any, ...]:
    """The `spans` row (`ROW_COLUMNS` order) for a record of `span_record`'s shape, sanitised,
    JSON already serialised. ValueError for a record of another version or length.

    Plain tuples for multi-row INSERTs: SQLAlchemy's per-row bind processing cost several
    times more than the insert itself.
    """
    check_record(record)
    (
        _, trace_id, span_id, name, kind, start_time, end_time, parent_span_id, status,
        status_code, error, alias, provider, model, deployment, usage, cost_usd, unpriced,
        price, ttft_ms, stream, user_id, session_id, tags, metadata, input_, output, params,
        attempts, attributes,
    ) = record  # fmt: skip
    return (
        clean_text(span_id), clean_text(trace_id), _text(parent_span_id), clean_text(name),
        clean_text(kind), start_time, end_time, clean_text(status), status_code, _text(error),
        _text(alias), _text(provider), _text(model), _text(deployment),
        *(_NO_USAGE if usage is None else usage),
        cost_usd, unpriced, json_text(price), (end_time - start_time) * 1000.0, ttft_ms,
        stream, _text(user_id), _text(session_id), json_text(tags), json_text(metadata),
        json_text(input_), json_text(output), json_text(params),
        json_text([dict(zip(_ATTEMPT_KEYS, attempt, strict=True)) for attempt in attempts]),
        json_text(attributes),
    )  # fmt: skip


def span_to_row(span: Span) -> tuple[Any, ...]:
    """The `spans` row for `span` (see `record_to_row`)."""
    return record_to_row(span_record(span))


# SQLite allows 32766 bound parameters per statement, PostgreSQL 65535.
MAX_ROWS_PER_INSERT = 32766 // len(ROW_COLUMNS)


_QUOTED_COLUMNS = ", ".join(f'"{name}"' for name in ROW_COLUMNS)
COPY_STATEMENT = f"COPY spans ({_QUOTED_COLUMNS}) FROM STDIN"
"""PostgreSQL's bulk load of `ROW_COLUMNS` rows (psycopg's `cursor.copy`)."""


def insert_statement(paramstyle: str, rows: int) -> str:
    """One INSERT of `rows` rows of `ROW_COLUMNS` in the driver's parameter style.

    A single multi-row statement, not `executemany`: sqlite3 releases and
    re-takes the GIL for every row of an executemany, and under load each
    re-take waits for the busy event loop, so the writer fell behind and the
    queue overflowed.
    """
    marker = "?" if paramstyle == "qmark" else "%s"
    one = f"({', '.join([marker] * len(ROW_COLUMNS))})"
    return f"INSERT INTO spans ({_QUOTED_COLUMNS}) VALUES {', '.join([one] * rows)}"


def _attempt_from_json(raw: Mapping[str, Any]) -> Attempt:
    return Attempt(
        deployment=str(raw.get("deployment", "")),
        provider=str(raw.get("provider", "")),
        model=str(raw.get("model", "")),
        outcome=str(raw.get("outcome", "")),
        status=raw.get("status"),
        latency_ms=float(raw.get("latency_ms") or 0.0),
        retry_after_s=raw.get("retry_after_s"),
    )


def row_to_span(row: Mapping[Any, Any]) -> Span:
    """The `Span` a `spans` row stores (usage None when the row has no token counts)."""
    usage = None
    if row["input_tokens"] is not None or row["output_tokens"] is not None:
        usage = Usage(
            input_tokens=row["input_tokens"] or 0,
            output_tokens=row["output_tokens"] or 0,
            cache_read_tokens=row["cache_read_tokens"] or 0,
            cache_write_tokens=row["cache_write_tokens"] or 0,
            reasoning_tokens=row["reasoning_tokens"] or 0,
            estimated=bool(row["usage_estimated"]),
        )
    return Span(
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        name=row["name"],
        kind=row["kind"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        parent_span_id=row["parent_span_id"],
        status=row["status"],
        status_code=row["status_code"],
        error=row["error"],
        alias=row["alias"],
        provider=row["provider"],
        model=row["model"],
        deployment=row["deployment"],
        usage=usage,
        cost_usd=row["cost_usd"],
        unpriced=bool(row["unpriced"]),
        price=row["price"],
        ttft_ms=row["ttft_ms"],
        stream=bool(row["stream"]),
        user_id=row["user_id"],
        session_id=row["session_id"],
        tags=row["tags"] or [],
        metadata=row["metadata"] or {},
        input=row["input"],
        output=row["output"],
        params=row["params"] or {},
        attempts=[_attempt_from_json(raw) for raw in row["attempts"] or []],
        attributes=row["attributes"] or {},
    )


class SpanRepository:
    """Read queries over stored spans; writes go through `keel.store.writer.SpanWriter`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def list_calls(
        self,
        since: float,
        until: float | None = None,
        alias: str | None = None,
        user: str | None = None,
        session: str | None = None,
        limit: int = 100,
        kinds: tuple[str, ...] = ("generation", "embedding"),
    ) -> list[Span]:
        """Model calls started in [since, until), newest first, filtered by alias/user/session."""
        t = spans_table.c
        kind = t.kind == kinds[0] if len(kinds) == 1 else t.kind.in_(kinds)
        query = select(spans_table).where(kind, t.start_time >= since)
        if until is not None:
            query = query.where(t.start_time < until)
        if alias is not None:
            query = query.where(t.alias == alias)
        if user is not None:
            query = query.where(t.user_id == user)
        if session is not None:
            query = query.where(t.session_id == session)
        return self._spans(query.order_by(t.start_time.desc(), t.span_id.desc()).limit(limit))

    def get(self, span_id: str) -> Span | None:
        """The span with this id, or None."""
        found = self._spans(select(spans_table).where(spans_table.c.span_id == span_id))
        return found[0] if found else None

    def trace(self, trace_id: str) -> list[Span]:
        """Every span of one trace, in start order (empty when the trace is unknown)."""
        t = spans_table.c
        query = select(spans_table).where(t.trace_id == trace_id)
        return self._spans(query.order_by(t.start_time, t.span_id))

    def trace_of(self, trace_or_span_id: str) -> list[Span]:
        """The spans of the trace with this id, or of the trace holding the span with it."""
        spans = self.trace(trace_or_span_id)
        if not spans:
            span = self.get(trace_or_span_id)
            spans = self.trace(span.trace_id) if span else []
        return spans

    def _spans(self, query: Select[Any]) -> list[Span]:
        with self._engine.connect() as connection:
            return [row_to_span(row) for row in connection.execute(query).mappings()]
