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

from dataclasses import fields
from typing import Any

import orjson

from keel.core.spans import Attempt, Span
from keel.core.usage import Usage
from keel.store.spans import check_record, clean_json, record_to_row, span_record


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
    return record_to_row(orjson.loads(line))


def decode_span(line: bytes) -> Span:
    """The `Span` one line of `encode_span` output stands for; ValueError if it is not one."""
    record = orjson.loads(line)
    check_record(record)
    values = record[1:]  # Span's fields in their declared order
    usage = values[_USAGE]
    values[_USAGE] = None if usage is None else Usage(*usage)
    values[_ATTEMPTS] = [Attempt(*attempt) for attempt in values[_ATTEMPTS]]
    return Span(*values)


_FIELD_NAMES = [field.name for field in fields(Span)]
_USAGE, _ATTEMPTS = _FIELD_NAMES.index("usage"), _FIELD_NAMES.index("attempts")
