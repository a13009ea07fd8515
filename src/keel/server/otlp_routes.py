"""The OTLP/HTTP trace receiver: `POST /v1/traces`, protobuf or JSON, optionally gzipped.

Answers in OTLP's own dialect: `ExportTraceServiceResponse` (with `partial_success`
when some spans were refused) in the request's encoding, and for errors a
`google.rpc.Status` in the request's encoding with the HTTP status OTLP prescribes
(400 malformed, 401 unauthenticated, 413 too large, 415 unsupported type or encoding).
Requires the master key like the rest of `/v1` when one is set.
"""

from __future__ import annotations

import zlib

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from keel.core.errors import GatewayError
from keel.server.asgi import ClientGone, Receive, Scope, Send, header_map, read_body
from keel.server.openai_routes import OpenAIRoutes
from keel.tracing.ingest import Ingestor
from keel.tracing.otlp import OtlpError, decode_json, decode_protobuf

_PROTOBUF = (b"application/x-protobuf", b"application/protobuf")
_JSON = b"application/json"
# google.rpc.Code values
_INVALID_ARGUMENT = 3
_UNAUTHENTICATED = 16
_RESOURCE_EXHAUSTED = 8
_UNAVAILABLE = 14


class OtlpRoutes:
    """Decodes OTLP trace exports and hands them to the ingestor."""

    def __init__(self, ingestor: Ingestor, auth: OpenAIRoutes, *, max_body_bytes: int) -> None:
        self._ingestor = ingestor
        self._auth = auth
        self._limit = max_body_bytes

    async def traces(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = header_map(scope)
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        as_json = content_type == _JSON
        if not as_json and content_type not in _PROTOBUF:
            await _error(send, False, 415, _INVALID_ARGUMENT, _unsupported(content_type))
            return
        if not self._auth.authorized(headers):
            message = "missing or invalid API key: send 'Authorization: Bearer <master key>'"
            await _error(send, as_json, 401, _UNAUTHENTICATED, message)
            return
        try:
            body = await read_body(receive, headers, self._limit)
        except ClientGone:
            return
        except GatewayError as exc:  # the body is over the limit
            await _error(send, as_json, exc.status, _RESOURCE_EXHAUSTED, exc.message)
            return
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding == b"gzip":
            try:
                body = _gunzip(body, self._limit)
            except ValueError as exc:
                status = 413 if "larger" in str(exc) else 400
                code = _RESOURCE_EXHAUSTED if status == 413 else _INVALID_ARGUMENT
                await _error(send, as_json, status, code, str(exc))
                return
        elif encoding != b"identity":
            message = f"unsupported Content-Encoding {encoding.decode('latin-1')!r}: use gzip"
            await _error(send, as_json, 415, _INVALID_ARGUMENT, message)
            return
        try:
            decoded = decode_json(body) if as_json else decode_protobuf(body)
        except OtlpError as exc:
            await _error(send, as_json, 400, _INVALID_ARGUMENT, str(exc))
            return
        result = self._ingestor.ingest(decoded)
        if result.busy:
            message = "Keel's span queue is full; retry after the delay in Retry-After"
            await _error(send, as_json, 503, _UNAVAILABLE, message, [(b"retry-after", b"1")])
            return
        await _answer(send, as_json, result.rejected, result.reason)


def _gunzip(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"the body is not valid gzip: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise ValueError(f"the decompressed body is larger than the limit of {limit} bytes")
    return data


def _unsupported(content_type: bytes) -> str:
    shown = content_type.decode("latin-1") or "none"
    return f"unsupported Content-Type {shown!r}: send application/x-protobuf or application/json"


async def _answer(send: Send, as_json: bool, rejected: int, reason: str) -> None:
    if as_json:
        payload: dict[str, object] = {}
        if rejected:
            payload["partialSuccess"] = {"rejectedSpans": str(rejected), "errorMessage": reason}
        body = orjson.dumps(payload)
    else:
        response = ExportTraceServiceResponse()
        if rejected:
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=rejected, error_message=reason)
            )
        body = response.SerializeToString()
    await _send(send, 200, as_json, body)


async def _error(
    send: Send,
    as_json: bool,
    status: int,
    code: int,
    message: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    if as_json:
        body = orjson.dumps({"code": code, "message": message})
    else:  # google.rpc.Status: code (field 1, varint), message (field 2, bytes)
        text = message.encode()
        body = b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text
    await _send(send, status, as_json, body, extra)


async def _send(
    send: Send,
    status: int,
    as_json: bool,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    content_type = _JSON if as_json else _PROTOBUF[0]
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    headers.extend(extra or ())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
