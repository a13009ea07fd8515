"""Spans as JSON lines: how the gateway process hands spans to the recording process.

One span is one line of JSON, its positional record (`keel.store.spans.span_record`);
orjson never writes a raw newline (newlines inside strings are escaped), so a stream of
spans needs no other framing. Encoding is the only recording work left on the gateway's
event loop, so it is one orjson call for the common span; a span orjson refuses (a lone
surrogate, an oversized int, an odd object in metadata) goes through the same sanitising
as the database columns and is encoded again. The recording process turns a line
straight into a row (`line_to_row`); `decode_span` gives back an equal `Span`.
"""

from __future__ import annotations

from typing import Any

import orjson

from keel.core.spans import Attempt, Span
from keel.core.usage import Usage
from keel.store.spans import RECORD_LENGTH, RECORD_VERSION, clean_json, record_to_row, span_record


def encode_span(span: Span) -> bytes:
    """`span` as one line of JSON, newline included."""
    record = span_record(span)
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except (orjson.JSONEncodeError, TypeError):
        return orjson.dumps(clean_json(record), option=orjson.OPT_APPEND_NEWLINE)


def line_to_row(line: bytes) -> tuple[Any, ...]:
    """The `spans` row for one line of `encode_span` output; ValueError (or TypeError,
    AttributeError for a record of the right length with values of the wrong types) if
    it is not one."""
    record = orjson.loads(line)
    if not isinstance(record, list):
        raise ValueError("not a span line of this Keel version")
    return record_to_row(record)


def decode_span(line: bytes) -> Span:
    """The `Span` one line of `encode_span` output stands for; ValueError if it is not one."""
    raw = orjson.loads(line)
    if not isinstance(raw, list) or len(raw) != RECORD_LENGTH or raw[0] != RECORD_VERSION:
        raise ValueError("not a span line of this Keel version")
    (
        _, trace_id, span_id, name, kind, start_time, end_time, parent_span_id, status,
        status_code, error, alias, provider, model, deployment, usage, cost_usd, unpriced,
        price, ttft_ms, stream, user_id, session_id, tags, metadata, input_, output, params,
        attempts, attributes,
    ) = raw  # fmt: skip
    return Span(
        trace_id=trace_id, span_id=span_id, name=name, kind=kind, start_time=start_time,
        end_time=end_time, parent_span_id=parent_span_id, status=status,
        status_code=status_code, error=error, alias=alias, provider=provider, model=model,
        deployment=deployment, usage=None if usage is None else Usage(*usage),
        cost_usd=cost_usd, unpriced=unpriced, price=price, ttft_ms=ttft_ms, stream=stream,
        user_id=user_id, session_id=session_id, tags=tags, metadata=metadata, input=input_,
        output=output, params=params, attempts=[Attempt(*a) for a in attempts],
        attributes=attributes,
    )  # fmt: skip
