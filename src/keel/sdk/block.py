"""`with keel.span(...)` and `async with keel.span(...)`: a span around a block of code.

The block's exception is recorded on the span and propagates unchanged. A
`traceparent` (e.g. from an incoming request's headers) makes the span a child
of the caller's span in another process, and its sampled flag decides whether
the trace is recorded.
"""

from __future__ import annotations

from contextlib import suppress
from contextvars import Token
from types import TracebackType
from typing import Any

from keel.core.ids import parse_traceparent
from keel.sdk.client import active_client
from keel.sdk.spans import UNSET, LiveSpan, check_kind
from keel.sdk.tracer import DISABLED_SPAN, current_span_var, end_span, fail_span, open_span


class SpanBlock:
    """A context manager (sync and async) opening a span; one `with` per instance."""

    __slots__ = ("_input", "_kind", "_name", "_span", "_token", "_traceparent")

    def __init__(self, name: str, kind: str, input: Any, traceparent: str | None) -> None:
        self._name = name
        self._kind = check_kind(kind)
        self._input = input
        self._traceparent = traceparent
        self._span: LiveSpan | None = None
        self._token: Token[LiveSpan | None] | None = None

    def __enter__(self) -> LiveSpan:
        client = active_client()
        if client is None:
            return DISABLED_SPAN
        try:
            remote = parse_traceparent(self._traceparent) if self._traceparent else None
            span = open_span(client, self._name, self._kind, remote)
            if self._input is not UNSET and span.sampled and not span.end_ns:
                span.capture_input(self._input)
                span.input_set = True
            self._token = current_span_var.set(span)
        except Exception as exc:
            client.log.internal_error(f"starting span {self._name!r}", exc)
            return DISABLED_SPAN
        self._span = span
        return span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        span, token = self._span, self._token
        if span is None or token is None:
            return
        self._span = self._token = None
        with suppress(ValueError):  # exited in another context than entered: nothing to restore
            current_span_var.reset(token)
        if exc is None:
            end_span(span)
        else:
            fail_span(span, exc)

    async def __aenter__(self) -> LiveSpan:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)


def span(
    name: str, *, kind: str = "span", input: Any = UNSET, traceparent: str | None = None
) -> SpanBlock:
    """A span around a `with` (or `async with`) block; yields the span for `.update(...)`.

    `kind` is one of `keel.sdk.SPAN_KINDS` (ValueError otherwise); `input` is recorded
    as the span's input; `traceparent` continues a trace from another process.
    """
    return SpanBlock(name, kind, input, traceparent)
