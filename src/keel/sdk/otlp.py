"""Ended spans as an OTLP/HTTP JSON ExportTraceServiceRequest, built on the exporter thread.

One request body is `{"resourceSpans":[{"resource":…,"scopeSpans":[{"scope":…,"spans":[…]}]}]}`;
each span is encoded on its own (`span_json`) so a batch can be cut by bytes and
a span that fails to encode costs only itself. Ids are lowercase hex, times
decimal strings of Unix nanoseconds, 64-bit integers decimal strings, as the
OTLP/JSON mapping of protobuf requires.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring
from typing import Any, Final

from keel.sdk.spans import LiveSpan

SCOPE_NAME: Final = "keel.sdk"
SCOPE_VERSION: Final = "0.1.0"  # keel.__version__ (a test keeps them equal)
SPAN_KIND_INTERNAL: Final = 1
STATUS_OK: Final = 1
STATUS_ERROR: Final = 2

_string = encode_basestring  # a JSON string literal, non-ASCII kept as is (C speed)


def value_json(value: Any) -> str:
    """An OTLP AnyValue as JSON: strings, bools, ints, finite floats, sequences; else JSON text."""
    if isinstance(value, str):
        return '{"stringValue":' + _string(value) + "}"
    if isinstance(value, bool):
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if isinstance(value, int):
        return f'{{"intValue":"{value:d}"}}'
    if isinstance(value, float):
        if math.isfinite(value):
            return f'{{"doubleValue":{value!r}}}'
        return f'{{"stringValue":"{value!r}"}}'
    if isinstance(value, list | tuple):
        return '{"arrayValue":{"values":[' + ",".join(map(value_json, value)) + "]}}"
    return value_json(json.dumps(value, ensure_ascii=False, default=str))


def attributes_json(values: Mapping[str, Any]) -> str:
    """An OTLP KeyValue list as JSON; None values are left out."""
    return (
        "["
        + ",".join(
            '{"key":' + _string(key) + ',"value":' + value_json(value) + "}"
            for key, value in values.items()
            if value is not None
        )
        + "]"
    )


def resource_attributes(
    service_name: str, release: str | None, environment: str | None
) -> dict[str, Any]:
    """The resource attributes every span of this process shares."""
    return {
        "service.name": service_name,
        "service.version": release,
        "deployment.environment.name": environment,
        "telemetry.sdk.name": "keel",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": SCOPE_VERSION,
    }


def span_attributes(span: LiveSpan, release: str | None, environment: str | None) -> dict[str, Any]:
    """The attributes the server maps, from the span and its trace's attributes.

    `release` and `environment` are the configured defaults; update_current_trace wins.
    """
    trace = span.trace_attributes
    values: dict[str, Any] = {
        "keel.span.kind": span.kind,
        "keel.input": span.input,
        "keel.output": span.output,
        "user.id": trace.user_id,
        "session.id": trace.session_id,
        "keel.release": trace.release or release,
        "keel.environment": trace.environment or environment,
    }
    if trace.tags:
        values["keel.tags"] = list(trace.tags)
    if trace.metadata or span.metadata:
        metadata = {**trace.metadata, **(span.metadata or {})}
        values["keel.metadata"] = json.dumps(metadata, ensure_ascii=False, separators=(",", ":"))
    if span.attributes:
        values.update(span.attributes)
    if span.error_type is not None:
        values["exception.type"] = span.error_type
        values["exception.message"] = span.error_message
    return values


def span_json(span: LiveSpan, release: str | None, environment: str | None) -> bytes:
    """One span as an OTLP/JSON object (UTF-8; lone surrogates replaced)."""
    parent = f',"parentSpanId":"{span.parent_span_id}"' if span.parent_span_id else ""
    if span.error_type is None:
        status = f'{{"code":{STATUS_OK}}}'
    else:
        message = span.error_type
        if span.error_message:
            message = f"{message}: {span.error_message}"
        status = f'{{"code":{STATUS_ERROR},"message":{_string(message)}}}'
    text = (
        f'{{"traceId":"{span.trace_id}","spanId":"{span.span_id}"{parent},'
        f'"name":{_string(span.name)},"kind":{SPAN_KIND_INTERNAL},'
        f'"startTimeUnixNano":"{span.start_ns}","endTimeUnixNano":"{span.end_ns}",'
        f'"attributes":{attributes_json(span_attributes(span, release, environment))},'
        f'"status":{status}}}'
    )
    return text.encode("utf-8", "replace")


class RequestFrame:
    """The bytes around the spans of a request, encoded once per process."""

    __slots__ = ("prefix", "suffix")

    def __init__(self, resource: Mapping[str, Any]) -> None:
        scope = f'{{"name":{_string(SCOPE_NAME)},"version":{_string(SCOPE_VERSION)}}}'
        prefix = (
            f'{{"resourceSpans":[{{"resource":{{"attributes":{attributes_json(resource)}}},'
            f'"scopeSpans":[{{"scope":{scope},"spans":['
        )
        self.prefix = prefix.encode("utf-8", "replace")
        self.suffix = b"]}]}]}"

    def body(self, spans: Sequence[bytes]) -> bytes:
        """A complete ExportTraceServiceRequest holding the encoded `spans`."""
        return self.prefix + b",".join(spans) + self.suffix
