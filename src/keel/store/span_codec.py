"""Spans as JSON lines: how the gateway process hands spans to the recording process.

One span is one line of JSON (orjson never writes a raw newline: newlines inside strings
are escaped), so a stream of spans needs no other framing. Encoding is the only recording
work left on the gateway's event loop, so it is one orjson call for the common span; a
span orjson refuses (a lone surrogate, an oversized int, an odd object in metadata) goes
through the same sanitising as the database columns (`keel.store.spans`) and is encoded
again. Decoding gives back an equal `Span`.
"""

from __future__ import annotations

from typing import Any

import orjson

from keel.core.spans import Attempt, Span
from keel.core.usage import Usage
from keel.store.spans import clean_json


def encode_span(span: Span) -> bytes:
    """`span` as one line of JSON, newline included."""
    try:
        return orjson.dumps(span, option=orjson.OPT_APPEND_NEWLINE)
    except (orjson.JSONEncodeError, TypeError):
        return orjson.dumps(clean_json(_as_dict(span)), option=orjson.OPT_APPEND_NEWLINE)


def decode_span(line: bytes) -> Span:
    """The `Span` one line of `encode_span` output stands for; ValueError if it is not one."""
    raw = orjson.loads(line)
    if not isinstance(raw, dict):
        raise ValueError("a span line must be a JSON object")
    usage = raw.pop("usage", None)
    attempts = raw.pop("attempts", None) or []
    span = Span(**raw)
    if usage is not None:
        span.usage = Usage(**usage)
    span.attempts = [Attempt(**attempt) for attempt in attempts]
    return span


def _as_dict(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {name: getattr(span, name) for name in Span.__slots__}
    if span.usage is not None:
        out["usage"] = {name: getattr(span.usage, name) for name in Usage.__slots__}
    out["attempts"] = [
        {name: getattr(attempt, name) for name in Attempt.__slots__} for attempt in span.attempts
    ]
    return out
