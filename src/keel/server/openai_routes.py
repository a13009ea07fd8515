"""The OpenAI-compatible routes under /v1: chat completions, embeddings, models.

Each handler parses the body once (orjson), builds a `Call` with the trace
context from the headers, and delegates to the gateway. A client that
disconnects cancels the handler, which cancels the upstream call.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from keel.core.errors import GatewayError
from keel.core.ids import new_span_id, new_trace_id, parse_traceparent
from keel.gateway.call import Call, validate_chat_body, validate_embeddings_body
from keel.gateway.pipeline import Gateway
from keel.gateway.prompting import PromptApplier
from keel.server.asgi import (
    SSE_HEADERS,
    ClientGone,
    Receive,
    Scope,
    Send,
    header_map,
    read_body,
    send_bytes,
    send_error,
)

Responder = Callable[[Call, Send, list[tuple[bytes, bytes]]], Awaitable[None]]

_UNAUTHORIZED = GatewayError(
    401,
    "Missing or invalid API key. Send 'Authorization: Bearer <key>' with the gateway's master key.",
    code="invalid_api_key",
)


class DisconnectWatch:
    """Cancels the current task when the client disconnects (after the body was read).

    The watching task starts only after `delay_s`: most calls finish sooner and
    never pay for it (a task per request cost ~9% of throughput). A client
    that leaves earlier is noticed when the watcher starts, since the server
    remembers the disconnect, so the upstream call is cancelled within `delay_s`.
    """

    __slots__ = ("_receive", "_task", "_timer", "_watcher", "gone")

    def __init__(self, receive: Receive, delay_s: float = 0.05) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._receive = receive
        self._watcher: asyncio.Task[None] | None = None
        self.gone = False
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._start)

    def _start(self) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                self._task.cancel()
                return

    def stop(self) -> None:
        self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()

    def absorb(self) -> bool:
        """True when a CancelledError came from our own disconnect cancel (then swallow it)."""
        if self.gone:
            self._task.uncancel()
            return True
        return False


class OpenAIRoutes:
    """Handlers for /v1; `models_body` is prepared once since aliases are fixed at start."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        master_key: str | None,
        max_body_bytes: int,
        prompts: PromptApplier | None = None,
    ) -> None:
        self._gateway = gateway
        self._prompts = prompts
        self._master_key = master_key.encode() if master_key else None
        self._limit = max_body_bytes
        self._models_body = orjson.dumps(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "keel"}
                    for name in sorted(gateway.router.aliases())
                ],
            }
        )

    def authorized(self, headers: dict[bytes, bytes]) -> bool:
        """True without a master key; else the bearer token must match it."""
        if self._master_key is None:
            return True
        value = headers.get(b"authorization", b"")
        if value[:7].lower() != b"bearer ":
            return False
        return hmac.compare_digest(value[7:].strip(), self._master_key)

    async def models(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.authorized(header_map(scope)):
            await send_error(send, _UNAUTHORIZED)
            return
        await send_bytes(send, 200, self._models_body)

    async def chat_completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = await self._call(scope, receive, send, validate_chat_body, self._prompts)
        if call is not None:
            await self._respond(call, receive, send, self._chat)

    async def embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = await self._call(scope, receive, send, validate_embeddings_body)
        if call is not None:
            await self._respond(call, receive, send, self._embeddings)

    async def _chat(self, call: Call, send: Send, headers: list[tuple[bytes, bytes]]) -> None:
        if call.body.get("stream") is True:
            await self._stream(send, await self._gateway.chat_stream(call), headers)
        else:
            await send_bytes(send, 200, await self._gateway.chat(call), headers)

    async def _embeddings(self, call: Call, send: Send, headers: list[tuple[bytes, bytes]]) -> None:
        await send_bytes(send, 200, await self._gateway.embeddings(call), headers)

    async def _respond(self, call: Call, receive: Receive, send: Send, respond: Responder) -> None:
        """Run `respond` watching for the client leaving; gateway errors in OpenAI format."""
        watch = DisconnectWatch(receive)
        try:
            await respond(call, send, [(b"x-keel-trace-id", call.trace_id.encode())])
        except GatewayError as exc:
            await send_error(send, exc)
        except asyncio.CancelledError:
            if not watch.absorb():
                raise
        finally:
            watch.stop()

    async def _stream(
        self, send: Send, frames: AsyncIterator[bytes], extra: list[tuple[bytes, bytes]]
    ) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + extra})
        try:
            async for frame in frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        finally:
            if isinstance(frames, AsyncGenerator):
                await frames.aclose()
        await send({"type": "http.response.body", "body": b""})

    async def _call(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        validate: Any,
        prompts: PromptApplier | None = None,
    ) -> Call | None:
        """Auth, body, validation and trace context; None when an error was already sent."""
        started_at = time.time()
        started_perf = time.perf_counter()
        headers = header_map(scope)
        try:
            if not self.authorized(headers):
                raise _UNAUTHORIZED
            raw = await read_body(receive, headers, self._limit)
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise GatewayError(
                    400,
                    f"The request body is not valid JSON (or not valid UTF-8): {exc}",
                    code="invalid_json",
                ) from None
            use = None
            if prompts is not None and type(body) is dict and "prompt" in body:
                use = await prompts.apply(body, _unit(body, headers))
            body = validate(body)
            call = _make_call(body, headers, started_at, started_perf)
            if use is not None:
                call.attributes = use.attributes()
            return call
        except GatewayError as exc:
            await send_error(send, exc)
        except ClientGone:
            pass
        return None


_CONTEXT_HEADERS = frozenset(
    (b"traceparent", b"x-keel-user", b"x-keel-session", b"x-keel-tags", b"x-keel-metadata")
)


def _make_call(
    body: dict[str, Any], headers: dict[bytes, bytes], started_at: float, started_perf: float
) -> Call:
    user = body.get("user")
    call = Call(
        body=body,
        alias=body["model"],
        trace_id=new_trace_id(),
        span_id=new_span_id(),
        started_at=started_at,
        started_perf=started_perf,
        user_id=user if isinstance(user, str) else None,
    )
    if _CONTEXT_HEADERS.isdisjoint(headers):  # the usual call: no trace context to read
        return call
    parent = parse_traceparent(_text(headers.get(b"traceparent")))
    if parent is not None:
        call.trace_id, call.parent_span_id = parent.trace_id, parent.span_id
    call.user_id = _text(headers.get(b"x-keel-user")) or call.user_id
    call.session_id = _text(headers.get(b"x-keel-session"))
    tags_header = _text(headers.get(b"x-keel-tags"))
    if tags_header:
        call.tags = [t.strip() for t in tags_header.split(",") if t.strip()]
    raw_metadata = headers.get(b"x-keel-metadata")
    if raw_metadata:
        try:
            metadata = orjson.loads(raw_metadata)
        except orjson.JSONDecodeError:
            metadata = None
        if not isinstance(metadata, dict):
            raise GatewayError(
                400, "Header x-keel-metadata must be a JSON object.", param="x-keel-metadata"
            )
        call.metadata = metadata
    return call


def _unit(body: dict[str, Any], headers: dict[bytes, bytes]) -> str:
    """Who a prompt rollout assigns: the user, else the session, else this request alone."""
    user = _text(headers.get(b"x-keel-user")) or body.get("user")
    if isinstance(user, str) and user:
        return f"user:{user}"
    session = _text(headers.get(b"x-keel-session"))
    if session:
        return f"session:{session}"
    return f"request:{new_trace_id()}"


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    text = value.decode("utf-8", "replace").strip()
    return text or None
