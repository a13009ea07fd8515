"""The OpenAI dialect: OpenAI itself and every OpenAI-compatible server (vLLM, Ollama, NIM, ...).

Bodies are relayed as bytes where possible: the request is re-serialised only
to swap in the upstream model name, the answer goes to the client as received
and is parsed once, for recording.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from keel.core.deployments import Deployment
from keel.core.errors import UpstreamError
from keel.core.usage import Usage, usage_from_openai
from keel.ports import ChatResult, EmbeddingsResult
from keel.providers.transport import (
    HttpTransport,
    UpstreamReply,
    UpstreamStream,
    upstream_object,
)

DEFAULT_API_BASE = "https://api.openai.com/v1"
_DONE = b"data: [DONE]\n\n"


class OpenAIProvider:
    """A deployment reached with the OpenAI wire format."""

    def __init__(self, deployment: Deployment, transport: HttpTransport) -> None:
        self.deployment = deployment
        self._transport = transport
        self._model = deployment.model
        self._timeout_s = deployment.timeout_s
        base = (deployment.api_base or DEFAULT_API_BASE).rstrip("/")
        headers = {"Content-Type": "application/json"}
        if deployment.api_key:
            headers["Authorization"] = f"Bearer {deployment.api_key}"
        self._chat = transport.endpoint(f"{base}/chat/completions", headers)
        self._embeddings = transport.endpoint(f"{base}/embeddings", headers)

    async def chat(self, body: dict[str, Any]) -> ChatResult:
        payload = orjson.dumps({**body, "model": self._model})
        reply = await self._transport.post(self._chat, payload, self._timeout_s)
        doc = _parse_ok(reply)
        if not isinstance(doc.get("choices"), list):
            raise UpstreamError("malformed", "chat completion without a 'choices' list")
        model = doc.get("model")
        return ChatResult(
            body=reply.body,
            response=doc,
            usage=usage_from_openai(doc.get("usage")),
            model=model if isinstance(model, str) else self._model,
        )

    async def open_chat_stream(self, body: dict[str, Any]) -> OpenAIChatStream:
        options = body.get("stream_options")
        client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        upstream_options = {**options, "include_usage": True} if isinstance(options, dict) else None
        payload = orjson.dumps(
            {
                **body,
                "model": self._model,
                "stream_options": upstream_options or {"include_usage": True},
            }
        )
        stream = await self._transport.open_stream(self._chat, payload, self._timeout_s)
        if stream.status != 200:
            raise error_from_reply(await stream.read_error())
        return OpenAIChatStream(stream, self._model, forward_usage=client_wants_usage)

    async def embeddings(self, body: dict[str, Any]) -> EmbeddingsResult:
        payload = orjson.dumps({**body, "model": self._model})
        reply = await self._transport.post(self._embeddings, payload, self._timeout_s)
        doc = _parse_ok(reply)
        if not isinstance(doc.get("data"), list):
            raise UpstreamError("malformed", "embeddings answer without a 'data' list")
        model = doc.get("model")
        return EmbeddingsResult(
            body=reply.body,
            usage=usage_from_openai(doc.get("usage")),
            model=model if isinstance(model, str) else self._model,
        )


class OpenAIChatStream:
    """Relays OpenAI SSE frames, assembling the answer and usage on the way."""

    def __init__(self, stream: UpstreamStream, model: str, *, forward_usage: bool) -> None:
        self._stream = stream
        self._forward_usage = forward_usage
        self.model = model
        self.usage: Usage | None = None
        self.output: dict[str, Any] = {}
        self.first_token_at: float | None = None
        self._choices: dict[int, dict[str, Any]] = {}

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[bytes]:
        done = False
        try:
            async for lines in self._stream.line_batches():
                out: list[bytes] = []
                try:
                    for line in lines:
                        if not line.startswith(b"data:"):
                            continue  # blank separators, comments, `event:` lines
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            done = True
                            out.append(_DONE)
                            break
                        if self._absorb(_chunk(data)):
                            out.append(b"data: " + data + b"\n\n")
                except UpstreamError:
                    if out:  # what arrived before the failure still reaches the client
                        yield b"".join(out)
                    raise
                if out:
                    yield out[0] if len(out) == 1 else b"".join(out)
                if done:
                    break
        finally:
            self._stream.close()
            self.output = {"choices": [self._choices[i] for i in sorted(self._choices)]}
        if not done:
            raise UpstreamError("connection", "upstream stream ended before [DONE]")

    def _absorb(self, chunk: dict[str, Any]) -> bool:
        """Fold one chunk into the assembled answer; False when the chunk is not forwarded."""
        model = chunk.get("model")
        if isinstance(model, str) and model:
            self.model = model
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        if usage:
            self.usage = usage_from_openai(usage)
        if not choices:
            # The usage-only final chunk exists because Keel asked for it; a client
            # that did not ask would choke on `choices[0]`.
            return self._forward_usage or not usage
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = {
                    "index": index,
                    "message": {"role": "assistant", "content": None},
                    "finish_reason": None,
                }
            delta = choice.get("delta")
            if isinstance(delta, dict):
                _merge_delta(state["message"], delta)
                if self.first_token_at is None and (
                    delta.get("content") or delta.get("tool_calls")
                ):
                    self.first_token_at = time.perf_counter()
            if choice.get("finish_reason"):
                state["finish_reason"] = choice["finish_reason"]
        return True

    async def aclose(self) -> None:
        self._stream.close()


def _chunk(data: bytes) -> dict[str, Any]:
    chunk = upstream_object(data, "stream chunk")
    if "error" in chunk:
        raise UpstreamError("http", _error_message(chunk), status=500, body=data)
    return chunk


def _merge_delta(message: dict[str, Any], delta: dict[str, Any]) -> None:
    content = delta.get("content")
    if isinstance(content, str):
        message["content"] = (message["content"] or "") + content
    calls = delta.get("tool_calls")
    if isinstance(calls, list):
        merged: list[dict[str, Any]] = message.setdefault("tool_calls", [])
        for call in calls:
            if not isinstance(call, dict):
                continue
            index = call.get("index", len(merged))
            while len(merged) <= index:
                merged.append(
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                )
            target = merged[index]
            if call.get("id"):
                target["id"] = call["id"]
            function = call.get("function")
            if isinstance(function, dict):
                target["function"]["name"] += function.get("name") or ""
                target["function"]["arguments"] += function.get("arguments") or ""


def _parse_ok(reply: UpstreamReply) -> dict[str, Any]:
    if reply.status != 200:
        raise error_from_reply(reply)
    return upstream_object(reply.body, "answer")


def error_from_reply(reply: UpstreamReply) -> UpstreamError:
    """An error status from an OpenAI-dialect upstream, keeping its error body for the client."""
    message = f"upstream answered HTTP {reply.status}"
    body: bytes | None = None
    try:
        doc = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        message = _error_message(doc)
        body = reply.body
    return UpstreamError(
        "http", message, status=reply.status, retry_after_s=reply.retry_after_s, body=body
    )


def _error_message(doc: dict[str, Any]) -> str:
    error = doc.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:500]
    return str(error)[:500]
