"""AnthropicProvider glue through the real HttpTransport, against a tiny local Messages endpoint.

The endpoint here only replays canned answers and records what it was sent;
the full fake upstream lives in keel.testing and is used by the e2e tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web

from keel.core.deployments import Deployment
from keel.core.errors import GatewayError, UpstreamError
from keel.core.usage import Usage
from keel.providers.anthropic import AnthropicProvider
from keel.providers.transport import HttpTransport
from tests.unit.providers.transcripts import TEXT_TRANSCRIPT

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [{"type": "text", "text": "Hi!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 2, "cache_read_input_tokens": 7},
}


@dataclass
class Upstream:
    """What the local endpoint answers next, and what it was sent."""

    status: int = 200
    body: bytes = orjson.dumps(MESSAGE)
    stream_chunks: list[bytes] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        self.requests.append((request.path, dict(request.headers), payload))
        if self.status != 200 or not payload.get("stream"):
            return web.Response(status=self.status, body=self.body, headers=self.headers)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for chunk in self.stream_chunks:
            await response.write(chunk)
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    state = Upstream()
    app = web.Application()
    app.router.add_post("/v1/messages", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield state, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def make_provider() -> AsyncIterator[Callable[[str], AnthropicProvider]]:
    transport = HttpTransport()
    await transport.start()

    def make(api_base: str) -> AnthropicProvider:
        deployment = Deployment(
            name="claude[0]",
            provider="anthropic",
            model="claude-haiku-4-5",
            api_base=api_base,
            api_key="sk-ant-test",
            timeout_s=5,
        )
        return AnthropicProvider(deployment, transport)

    yield make
    await transport.close()


async def test_chat_posts_messages_and_answers_in_openai_format(
    upstream: tuple[Upstream, str], make_provider: Callable[[str], AnthropicProvider]
) -> None:
    state, base = upstream
    result = await make_provider(base + "/v1").chat(
        {"model": "fast", "messages": [{"role": "user", "content": "hello"}]}
    )
    path, headers, payload = state.requests[0]
    assert path == "/v1/messages"
    assert headers["x-api-key"] == "sk-ant-test"
    assert headers["anthropic-version"] == "2023-06-01"
    assert payload["model"] == "claude-haiku-4-5" and "stream" not in payload
    assert result.response["choices"][0]["message"]["content"] == "Hi!"
    assert orjson.loads(result.body) == result.response
    assert result.usage == Usage(input_tokens=10, output_tokens=2, cache_read_tokens=7)
    assert result.model == "claude-haiku-4-5"


async def test_chat_error_reaches_the_client_in_openai_shape(
    upstream: tuple[Upstream, str], make_provider: Callable[[str], AnthropicProvider]
) -> None:
    state, base = upstream
    state.status = 429
    state.headers = {"retry-after": "3"}
    state.body = b'{"type":"error","error":{"type":"rate_limit_error","message":"Too many"}}'
    with pytest.raises(UpstreamError) as info:
        await make_provider(base).chat({"messages": [{"role": "user", "content": "hi"}]})
    assert (info.value.status, info.value.retry_after_s, info.value.message) == (
        429,
        3.0,
        "Too many",
    )
    assert info.value.body is not None
    assert orjson.loads(info.value.body)["error"]["type"] == "rate_limit_error"


async def test_chat_with_a_body_that_is_not_json_is_malformed(
    upstream: tuple[Upstream, str], make_provider: Callable[[str], AnthropicProvider]
) -> None:
    state, base = upstream
    state.body = b"{truncated"
    with pytest.raises(UpstreamError) as info:
        await make_provider(base).chat({"messages": [{"role": "user", "content": "hi"}]})
    assert info.value.kind == "malformed"


async def test_stream_relays_openai_frames_and_records_the_answer(
    upstream: tuple[Upstream, str], make_provider: Callable[[str], AnthropicProvider]
) -> None:
    state, base = upstream
    # Split at awkward places: the transport reads lines, whatever the chunking.
    state.stream_chunks = [TEXT_TRANSCRIPT[i : i + 37] for i in range(0, len(TEXT_TRANSCRIPT), 37)]
    stream = await make_provider(base).open_chat_stream(
        {
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    # Each item holds one or more whole frames (as many as one network read completed).
    body = b"".join([item async for item in stream])
    frames = [frame + b"\n\n" for frame in body.split(b"\n\n") if frame]
    assert state.requests[0][2]["stream"] is True
    assert frames[-1] == b"data: [DONE]\n\n"
    assert orjson.loads(frames[-2][6:])["usage"]["prompt_tokens"] == 135
    assert stream.output["choices"][0]["message"]["content"] == "Hello world"
    assert stream.usage == Usage(
        input_tokens=135, output_tokens=15, cache_read_tokens=100, cache_write_tokens=10
    )
    assert stream.model == "claude-sonnet-4-5-20250929"
    assert stream.first_token_at is not None


async def test_stream_cut_before_message_stop_is_a_connection_error(
    upstream: tuple[Upstream, str], make_provider: Callable[[str], AnthropicProvider]
) -> None:
    state, base = upstream
    state.stream_chunks = [TEXT_TRANSCRIPT.partition(b"event: message_delta")[0]]
    stream = await make_provider(base).open_chat_stream(
        {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    frames: list[bytes] = []
    with pytest.raises(UpstreamError) as info:
        async for frame in stream:
            frames.append(frame)
    assert info.value.kind == "connection"
    # role, "Hello", " world": what arrived was relayed
    assert b"".join(frames).count(b"data: ") == 3
    assert stream.output["choices"][0]["message"]["content"] == "Hello world"


async def test_stream_error_status_is_raised_before_any_frame(
    upstream: tuple[Upstream, str], make_provider: Callable[[str], AnthropicProvider]
) -> None:
    state, base = upstream
    state.status = 529
    state.body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    with pytest.raises(UpstreamError) as info:
        await make_provider(base).open_chat_stream(
            {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        )
    assert (info.value.status, info.value.retryable) == (529, True)


async def test_embeddings_are_a_client_error(
    make_provider: Callable[[str], AnthropicProvider],
) -> None:
    with pytest.raises(GatewayError) as info:
        await make_provider("http://unused").embeddings({"input": "x"})
    assert (info.value.status, info.value.param) == (400, "model")


async def test_frames_read_together_with_an_error_event_are_relayed_before_the_error(
    upstream: tuple[Upstream, str], make_provider: Callable[[str], AnthropicProvider]
) -> None:
    state, base = upstream
    head = TEXT_TRANSCRIPT.partition(b"event: message_delta")[0]
    error = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error"}}\n\n'
    state.stream_chunks = [head + error]  # one network read holds the text and the error
    stream = await make_provider(base).open_chat_stream(
        {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    items: list[bytes] = []
    with pytest.raises(UpstreamError) as info:
        async for item in stream:
            items.append(item)
    assert info.value.status == 529
    assert b"".join(items).count(b"data: ") == 3  # role, "Hello", " world" came first
