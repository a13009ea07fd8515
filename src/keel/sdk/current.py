"""The current span and trace as the application sees them: their ids, and updates to them.

`update_current_span` changes the innermost open span; `update_current_trace`
changes attributes shared by the whole trace (user, session, tags, metadata,
release, environment), which every span of the trace that ends afterwards
carries, the root included. Called outside any span, they log a warning (once a
minute) and do nothing; in an unsampled trace they do nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keel.sdk.client import active_client
from keel.sdk.spans import UNSET, LiveSpan
from keel.sdk.tracer import current_span_var


def _current_or_warn(caller: str) -> LiveSpan | None:
    span = current_span_var.get()
    if span is None:
        client = active_client()
        if client is not None:
            client.log.warn(
                f"outside:{caller}",
                "keel: %s() was called outside any span (no @keel.observe function or "
                "keel.span block is running); it was ignored",
                caller,
            )
    return span


def update_current_span(
    *,
    name: str | None = None,
    input: Any = UNSET,
    output: Any = UNSET,
    metadata: Mapping[str, Any] | None = None,
    model: str | None = None,
    response_model: str | None = None,
    provider: str | None = None,
    usage: Mapping[str, int] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """Set fields of the current span; None (or omitted) leaves a field as it is.

    `input`/`output` replace the captured ones (a decorator does not overwrite an
    output set here); `metadata` is merged; `model`, `response_model`, `provider`
    and `usage` (`input_tokens`/`output_tokens`, or `prompt_tokens`/`completion_tokens`)
    become the GenAI attributes of a generation; `attributes` are extra span attributes.
    """
    span = _current_or_warn("update_current_span")
    if span is not None:
        span.update(
            name=name,
            input=input,
            output=output,
            metadata=metadata,
            model=model,
            response_model=response_model,
            provider=provider,
            usage=usage,
            attributes=attributes,
        )


def update_current_trace(
    *,
    name: str | None = None,
    user_id: str | None = None,
    session_id: str | None = None,
    tags: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    release: str | None = None,
    environment: str | None = None,
    input: Any = UNSET,
    output: Any = UNSET,
) -> None:
    """Set attributes of the current trace; None (or omitted) leaves an attribute as it is.

    Tags are added to the trace's earlier tags and metadata merged into its earlier
    metadata; `release` and `environment` override the configured ones for this trace.
    `name`, `input` and `output` are set on the trace's root span in this process.
    """
    span = _current_or_warn("update_current_trace")
    if span is not None:
        span.update_trace(
            name=name,
            user_id=user_id,
            session_id=session_id,
            tags=tags,
            metadata=metadata,
            release=release,
            environment=environment,
            input=input,
            output=output,
        )


def current_trace_id() -> str | None:
    """The current trace's id (32 hex digits), e.g. to score it later; None outside spans."""
    span = current_span_var.get()
    return None if span is None else span.trace_id


def current_span_id() -> str | None:
    """The current span's id (16 hex digits); None outside spans."""
    span = current_span_var.get()
    return None if span is None else span.span_id
