"""Spans as JSON lines between the gateway and the recording process."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from keel.core.spans import Attempt, Span
from keel.core.usage import Usage
from keel.store.span_codec import decode_span, encode_span, line_to_row
from keel.store.spans import span_to_row


def test_a_full_span_comes_back_equal(make_span: Callable[..., Span]) -> None:
    span = make_span(
        usage=Usage(input_tokens=12, output_tokens=3, cache_read_tokens=8, estimated=True),
        attempts=[
            Attempt("fast[0]", "openai", "gpt-4o-mini", "HTTP 503: busy", 503, 1.5, 2.0),
            Attempt("fast[1]", "openai", "gpt-4o-mini", "ok", 200, 3.25),
        ],
        input=[{"role": "user", "content": "line one\nline two 👋"}],
        metadata={"nested": {"n": [1, 2.5, None, True]}},
        tags=["a", "b"],
    )
    line = encode_span(span)
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one span, one line
    assert decode_span(line) == span


def test_a_span_without_usage_keeps_usage_none(make_span: Callable[..., Span]) -> None:
    span = make_span(usage=None, attempts=[])
    assert decode_span(encode_span(span)) == span


def test_what_orjson_refuses_is_sanitised_instead_of_lost(make_span: Callable[..., Span]) -> None:
    span = make_span(
        input=[{"role": "user", "content": "half a pair \ud83d"}],
        metadata={"huge": 2**70, 3: "int key"},
    )
    decoded = decode_span(encode_span(span))
    assert decoded.input == [{"role": "user", "content": "half a pair \ufffd"}]
    assert decoded.metadata == {"huge": str(2**70), "3": "int key"}
    assert decoded.span_id == span.span_id


@pytest.mark.parametrize("line", [b"[1, 2]\n", b"not json\n", b'{"name": "no ids"}\n'])
def test_a_line_that_is_not_a_span_is_an_error(line: bytes) -> None:
    with pytest.raises((ValueError, TypeError)):
        decode_span(line)


def test_every_span_field_is_carried() -> None:
    # A field added to Span but not to the codec would silently vanish between processes.
    from keel.store import spans

    assert len(Span.__slots__) + 1 == spans.RECORD_LENGTH


def test_the_recording_process_makes_the_same_row_as_the_span_would(
    make_span: Callable[..., Span],
) -> None:
    span = make_span(
        usage=Usage(input_tokens=5, output_tokens=2, reasoning_tokens=1),
        attempts=[Attempt("fast[0]", "openai", "gpt-4o-mini", "ok", 200, 3.25, None)],
        input=[{"role": "user", "content": "nul \x00 and \ud83d"}],
        metadata={"huge": 2**70},
    )
    assert line_to_row(encode_span(span)) == span_to_row(span)
    bare = make_span(usage=None, attempts=[])
    assert line_to_row(encode_span(bare)) == span_to_row(bare)


@pytest.mark.parametrize("line", [b"[1, 2]\n", b"{}\n", b"[2" + b", null" * 29 + b"]\n"])
def test_a_line_that_is_not_a_span_makes_no_row(line: bytes) -> None:
    with pytest.raises(ValueError):
        line_to_row(line)
