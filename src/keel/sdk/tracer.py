"""The current span (a context variable) and the start and end of every span.

The current span lives in a `contextvars.ContextVar`, so it follows the code
across `await`, into asyncio tasks (which copy the context when created) and
into threads started with a copied context (`contextvars.copy_context().run`,
`asyncio.to_thread`). A plain `threading.Thread` or `ThreadPoolExecutor.submit`
starts with an empty context: its spans begin new traces unless the context is
copied.

Sampling is decided once per trace at its root. Below an unsampled root no span
object is created at all: the root's placeholder stays current and only serves
`traceparent` propagation.
"""

from __future__ import annotations

from contextvars import ContextVar
from time import time_ns
from typing import Any, Final

from keel.core.ids import ParentContext, new_span_id, new_trace_id
from keel.sdk.client import Client
from keel.sdk.spans import LiveSpan, TraceState

current_span_var: Final[ContextVar[LiveSpan | None]] = ContextVar("keel_span", default=None)

# What `keel.span` yields when the SDK is disabled: updates to it are ignored.
DISABLED_SPAN: Final = LiveSpan(None, "0" * 32, "0" * 16, None, "disabled", "span", False, None, 0)


def current_span() -> LiveSpan | None:
    """The innermost span open in this context (sampled or not), or None."""
    return current_span_var.get()


def open_span(
    client: Client, name: str, kind: str, remote: ParentContext | None = None
) -> LiveSpan:
    """A started span: a child of `remote` if given, else of the current span, else a root."""
    if remote is None:
        parent = current_span_var.get()
        if parent is not None:
            if not parent.sampled:
                return parent
            return LiveSpan(
                client,
                parent.trace_id,
                new_span_id(),
                parent.span_id,
                name,
                kind,
                True,
                parent.trace,
                time_ns(),
            )
        trace_id, parent_span_id, sampled = new_trace_id(), None, client.sample()
    else:
        trace_id, parent_span_id, sampled = remote
    if not sampled:  # keeps the caller's span id, so propagation passes it on unchanged
        span_id = parent_span_id or new_span_id()
        return LiveSpan(client, trace_id, span_id, None, name, kind, False, None, 0)
    span = LiveSpan(
        client, trace_id, new_span_id(), parent_span_id, name, kind, True, None, time_ns()
    )
    span.trace = TraceState(span)
    return span


def end_span(
    span: LiveSpan, output: Any = None, capture_output: bool = False, owned: bool = False
) -> None:
    """End a span whose code completed; its output is captured unless set explicitly.

    `owned`: the SDK built `output` (a generator's list of items), nobody else holds it.
    """
    client = span.client
    if client is None or not span.sampled or span.end_ns:
        return
    span.end_ns = time_ns()
    try:
        if capture_output and output is not None and not span.output_set:
            span.capture_output(output, owned)
        _finish(client, span)
    except Exception as exc:
        client.log.internal_error("ending a span", exc)


def fail_span(
    span: LiveSpan, error: BaseException, output: Any = None, capture_output: bool = False
) -> None:
    """End a span whose code raised `error` (recorded as the span's status).

    `output` is what was produced before the error (a generator's list of items so far).
    """
    client = span.client
    if client is None or not span.sampled or span.end_ns:
        return
    span.end_ns = time_ns()
    try:
        span.error_type = type(error).__name__
        span.error_message = str(error)
    except Exception as exc:  # a __str__ that raises
        client.log.internal_error("describing an exception", exc)
    try:
        if capture_output and output and not span.output_set:
            span.capture_output(output, owned=True)
        _finish(client, span)
    except Exception as exc:
        client.log.internal_error("ending a span", exc)


def _finish(client: Client, span: LiveSpan) -> None:
    trace = span.trace
    if trace is not None:
        span.trace_attributes = trace.attributes
        if trace.root is span:
            trace.root = None
    client.record(span)
