"""The Anthropic dialect: Claude models behind the Messages API, served to OpenAI clients.

This module is the glue (URL, headers, transport, clock); the translation
both ways is pure and lives in `anthropic_translate` (requests),
`anthropic_response` (answers, usage, errors) and `anthropic_stream` (SSE).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from keel.core.deployments import Deployment
from keel.core.errors import GatewayError, UpstreamError
from keel.core.usage import Usage
from keel.ports import ChatResult, EmbeddingsResult
from keel.providers.anthropic_response import chat_completion, error_from_status
from keel.providers.anthropic_stream import SSEParser, StreamTranslator
from keel.providers.anthropic_translate import to_anthropic_request
from keel.providers.transport import HttpTransport, UpstreamStream, upstream_object

DEFAULT_API_BASE = "https://api.anthropic.com"
API_VERSION = "2023-06-01"


class AnthropicProvider:
    """A deployment reached with the Anthropic Messages API."""

    def __init__(self, deployment: Deployment, transport: HttpTransport) -> None:
        self.deployment = deployment
        self._transport = transport
        self._model = deployment.model
        self._timeout_s = deployment.timeout_s
        base = (deployment.api_base or DEFAULT_API_BASE).rstrip("/")
        # Accept a base written with the version, as OpenAI-style bases usually are.
        url = f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"
        headers = {"anthropic-version": API_VERSION, "content-type": "application/json"}
        if deployment.api_key:
            headers["x-api-key"] = deployment.api_key
        self._messages = transport.endpoint(url, headers)

    async def chat(self, body: dict[str, Any]) -> ChatResult:
        request = to_anthropic_request(body, self._model, stream=False)
        reply = await self._transport.post(
            self._messages, orjson.dumps(request.payload), self._timeout_s
        )
        if reply.status != 200:
            raise error_from_status(reply.status, reply.body, reply.retry_after_s)
        doc = upstream_object(reply.body, "answer")
        response, usage = chat_completion(
            doc, created=int(time.time()), model=self._model, json_tool=request.json_tool
        )
        return ChatResult(
            body=orjson.dumps(response), response=response, usage=usage, model=response["model"]
        )

    async def open_chat_stream(self, body: dict[str, Any]) -> AnthropicChatStream:
        request = to_anthropic_request(body, self._model, stream=True)
        stream = await self._transport.open_stream(
            self._messages, orjson.dumps(request.payload), self._timeout_s
        )
        if stream.status != 200:
            reply = await stream.read_error()
            raise error_from_status(reply.status, reply.body, reply.retry_after_s)
        translator = StreamTranslator(
            self._model,
            created=int(time.time()),
            include_usage=request.include_usage,
            json_tool=request.json_tool,
        )
        return AnthropicChatStream(stream, translator)

    async def embeddings(self, body: dict[str, Any]) -> EmbeddingsResult:
        raise GatewayError(
            400,
            f"deployment {self.deployment.name!r} is an Anthropic model, and Anthropic does not "
            "offer embeddings; point an alias at an OpenAI-compatible deployment",
            param="model",
        )


class AnthropicChatStream:
    """An Anthropic stream relayed as OpenAI SSE frames, assembling answer and usage."""

    def __init__(self, stream: UpstreamStream, translator: StreamTranslator) -> None:
        self._stream = stream
        self._translator = translator
        self.model = translator.model
        self.usage: Usage | None = None
        self.output: dict[str, Any] = {}
        self.first_token_at: float | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[bytes]:
        translator = self._translator
        parser = SSEParser()
        try:
            async for lines in self._stream.line_batches():
                out: list[bytes] = []
                try:
                    for line in lines:
                        event = parser.feed(line)
                        if event is None:
                            continue
                        out.extend(translator.feed(*event))
                        if translator.finished:
                            break
                except UpstreamError:
                    if out:  # what arrived before the failure still reaches the client
                        yield b"".join(out)
                    raise
                if self.first_token_at is None and translator.saw_token:
                    self.first_token_at = time.perf_counter()
                if out:
                    yield out[0] if len(out) == 1 else b"".join(out)
                if translator.finished:
                    break
            else:
                event = parser.flush()  # a last event without its blank line
                if event is not None:
                    for frame in translator.feed(*event):
                        yield frame
        finally:
            self._stream.close()
            # Kept even after a failure: tokens already generated are billed.
            self.model = translator.model
            self.usage = translator.usage()
            self.output = translator.output()
        if not translator.finished:
            raise UpstreamError("connection", "upstream stream ended before message_stop")

    async def aclose(self) -> None:
        self._stream.close()
