"""Outgoing calls carry the current span as a W3C `traceparent` header.

`trace_headers()` is the hook for any HTTP client:
`client.chat.completions.create(..., extra_headers=keel.trace_headers())`.
`keel.openai_client()` and `keel.async_openai_client()` (in `keel.sdk.openai_clients`)
add the header to every request by themselves. The Keel gateway reads it and
records its generation span as a child of the caller's span.
"""

from __future__ import annotations

from keel.core.ids import format_traceparent
from keel.sdk.tracer import current_span_var


def trace_headers() -> dict[str, str]:
    """`{"traceparent": ...}` for the current span, or `{}` outside spans.

    The sampled flag tells the callee whether this trace is being recorded.
    """
    span = current_span_var.get()
    if span is None:
        return {}
    return {"traceparent": format_traceparent(span.trace_id, span.span_id, span.sampled)}
