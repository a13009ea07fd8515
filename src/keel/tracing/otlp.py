"""OTLP/HTTP trace payloads, protobuf and JSON, decoded into neutral span records.

Both encodings of `ExportTraceServiceRequest` come out as the same `OtlpSpan` values
with plain Python attribute values (`AnyValue` unwrapped: arrays become lists, key-value
lists dicts, bytes stay bytes), so that the mapping to Keel's span model
(`keel.tracing.semconv`) does not care how the spans arrived. The JSON decoding follows
the OTLP/JSON rules: trace and span ids are hex strings, 64-bit integers may be strings,
enums are integers, field names are lowerCamelCase (snake_case is accepted too).

A payload that is not a valid request is an `OtlpError`; one malformed span inside a
valid payload is skipped and counted (`Decoded.rejected`, with the first reason), never
the whole batch.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

STATUS_ERROR = 2


class OtlpError(ValueError):
    """The body is not an OTLP trace export request."""


@dataclass(slots=True)
class OtlpSpan:
    """One span as OTLP describes it, attribute values unwrapped."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int = 0
    status_message: str = ""
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""


@dataclass(slots=True)
class Decoded:
    """The spans of one request, and how many were refused (with the first reason)."""

    spans: list[OtlpSpan]
    rejected: int = 0
    reason: str = ""


# -- protobuf ------------------------------------------------------------------------------


def decode_protobuf(body: bytes) -> Decoded:
    """Decode an `ExportTraceServiceRequest` in the protobuf encoding."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise OtlpError(f"not an OTLP protobuf trace request: {exc}") from None
    out = Decoded([])
    append = out.spans.append
    for resource_spans in request.resource_spans:
        resource = _pb_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                trace_id, span_id = span.trace_id, span.span_id
                if len(trace_id) != 16 or trace_id == _ZERO_TRACE_ID:
                    _reject(out, f"invalid trace id {trace_id.hex()!r} (16 bytes, not all zero)")
                    continue
                if len(span_id) != 8 or span_id == _ZERO_SPAN_ID:
                    _reject(out, f"invalid span id {span_id.hex()!r} (8 bytes, not all zero)")
                    continue
                status = span.status
                events = span.events
                append(
                    OtlpSpan(
                        trace_id.hex(),
                        span_id.hex(),
                        span.parent_span_id.hex() or None,
                        span.name,
                        span.kind,
                        span.start_time_unix_nano,
                        span.end_time_unix_nano,
                        _pb_attributes(span.attributes),
                        status.code,
                        status.message,
                        [(e.name, _pb_attributes(e.attributes)) for e in events] if events else [],
                        resource,
                        scope,
                    )
                )
    return out


_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)


def _pb_attributes(pairs: Any) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        value = pair.value
        which = value.WhichOneof("value")
        if which == "string_value":
            out[pair.key] = value.string_value
        else:
            out[pair.key] = _pb_value(value, which)
    return out


def _pb_value(value: AnyValue, which: str | None) -> Any:
    if which is None:
        return None
    if which == "array_value":
        return [_pb_value(v, v.WhichOneof("value")) for v in value.array_value.values]
    if which == "kvlist_value":
        return _pb_attributes(value.kvlist_value.values)
    return getattr(value, which)


# -- JSON ----------------------------------------------------------------------------------


def decode_json(body: bytes) -> Decoded:
    """Decode an `ExportTraceServiceRequest` in the OTLP/JSON encoding."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OtlpError(f"not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise OtlpError("an OTLP JSON request must be an object with 'resourceSpans'")
    out = Decoded([])
    for resource_spans in _list(_get(request, "resourceSpans")):
        resource = _json_attributes(_get(_dict(_get(resource_spans, "resource")), "attributes"))
        for scope_spans in _list(_get(resource_spans, "scopeSpans")):
            scope = str(_get(_dict(_get(scope_spans, "scope")), "name") or "")
            for raw in _list(_get(scope_spans, "spans")):
                try:
                    out.spans.append(_json_span(raw, resource, scope))
                except (TypeError, ValueError) as exc:
                    _reject(out, str(exc))
    return out


def _json_span(raw: Any, resource: dict[str, Any], scope: str) -> OtlpSpan:
    if not isinstance(raw, dict):
        raise ValueError("a span must be an object")
    trace_id = _hex_id(_get(raw, "traceId"))
    span_id = _hex_id(_get(raw, "spanId"))
    problem = _check_ids(trace_id, span_id)
    if problem:
        raise ValueError(problem)
    status = _dict(_get(raw, "status"))
    return OtlpSpan(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=_hex_id(_get(raw, "parentSpanId")) or None,
        name=str(_get(raw, "name") or ""),
        kind=_int(_get(raw, "kind")),
        start_ns=_int(_get(raw, "startTimeUnixNano")),
        end_ns=_int(_get(raw, "endTimeUnixNano")),
        attributes=_json_attributes(_get(raw, "attributes")),
        status_code=_int(_get(status, "code")),
        status_message=str(_get(status, "message") or ""),
        events=[
            (str(_get(e, "name") or ""), _json_attributes(_get(e, "attributes")))
            for e in _list(_get(raw, "events"))
            if isinstance(e, dict)
        ],
        resource=resource,
        scope=scope,
    )


def _json_attributes(pairs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in _list(pairs):
        if isinstance(pair, dict) and isinstance(pair.get("key"), str):
            out[pair["key"]] = _json_value(pair.get("value"))
    return out


def _json_value(value: Any) -> Any:
    if not isinstance(value, dict) or not value:
        return None
    for key, inner in value.items():
        if key in ("stringValue", "string_value", "boolValue", "bool_value"):
            return inner
        if key in ("intValue", "int_value"):
            return _int(inner)
        if key in ("doubleValue", "double_value"):
            return float(inner) if isinstance(inner, int | float | str) else None
        if key in ("arrayValue", "array_value"):
            return [_json_value(v) for v in _list(_get(_dict(inner), "values"))]
        if key in ("kvlistValue", "kvlist_value"):
            return _json_attributes(_get(_dict(inner), "values"))
        if key in ("bytesValue", "bytes_value") and isinstance(inner, str):
            return base64.b64decode(inner)
    return None


def _hex_id(value: Any) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise ValueError(f"span ids must be hex strings, got {type(value).__name__}")
    return value.lower()


def _check_ids(trace_id: str, span_id: str) -> str:
    if len(trace_id) != 32 or not _is_hex(trace_id) or trace_id == "0" * 32:
        return f"invalid trace id {trace_id!r} (32 hex digits, not all zero)"
    if len(span_id) != 16 or not _is_hex(span_id) or span_id == "0" * 16:
        return f"invalid span id {span_id!r} (16 hex digits, not all zero)"
    return ""


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def _reject(out: Decoded, reason: str) -> None:
    out.rejected += 1
    out.reason = out.reason or reason


def _get(mapping: Mapping[str, Any], camel: str) -> Any:
    """`mapping[camel]`, or its snake_case spelling, or None."""
    if camel in mapping:
        return mapping[camel]
    return mapping.get("".join("_" + c.lower() if c.isupper() else c for c in camel))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if value is None:
        return 0
    raise ValueError(f"not an integer: {value!r}")
