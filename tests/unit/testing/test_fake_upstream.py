"""The fake upstream speaks the real wire formats (proved with the official SDK) and its
faults do what they say."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from keel.testing import Behavior, FakeUpstream, Fault

MESSAGES: Any = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello there"},
]
TOOLS: Any = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    }
]
ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def threaded_fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.in_thread() as fake:
        yield fake


@pytest.fixture
def fake(threaded_fake: FakeUpstream) -> FakeUpstream:
    threaded_fake.reset()
    return threaded_fake


@pytest.fixture
def client(fake: FakeUpstream) -> Iterator[OpenAI]:
    with OpenAI(base_url=fake.url + "/v1", api_key="sk-test", max_retries=0, timeout=5) as c:
        yield c


@pytest.fixture
async def afake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


@pytest.fixture
async def aclient(afake: FakeUpstream) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(
        base_url=afake.url + "/v1", api_key="sk-test", max_retries=0, timeout=5
    ) as c:
        yield c


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def _eventually(condition: Any, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE frame."""
    events = []
    for frame in text.split("\n\n"):
        if not frame:
            continue
        name = None
        data = ""
        for line in frame.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]
        events.append((name, data))
    return events


# -- OpenAI dialect, official sync client against in_thread() ------------------------------


def test_chat_echoes_last_user_message_with_realistic_usage(client: OpenAI) -> None:
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert reply.object == "chat.completion"
    assert reply.model == "gpt-4o-mini"
    assert reply.choices[0].message.content == "Echo: hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    # 2 + 2 words, 3 tokens of framing per message, 3 to prime the reply
    assert reply.usage.prompt_tokens == 4 + 2 * 3 + 3
    assert reply.usage.completion_tokens == 3
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 3


def test_stream_with_include_usage_ends_with_a_usage_chunk(
    fake: FakeUpstream, client: OpenAI
) -> None:
    fake.default = Behavior(reply="one two three four five", chunks=5)

    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    text_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(text_chunks) == 5
    assert "".join(c.choices[0].delta.content or "" for c in text_chunks) == (
        "one two three four five"
    )
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_include_usage_sends_no_usage_chunk(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))

    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_tool_call_when_the_request_offers_tools(fake: FakeUpstream, client: OpenAI) -> None:
    fake.default = Behavior(tool_call=("get_weather", '{"city":"Paris"}'), chunks=3)

    reply = client.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS)
    streamed = list(
        client.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS, stream=True)
    )
    plain = client.chat.completions.create(model="m", messages=MESSAGES)

    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = (choice.message.tool_calls or [])[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    deltas = [tc for c in streamed for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function is not None and deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas if d.function) == '{"city":"Paris"}'
    assert streamed[-1].choices[0].finish_reason == "tool_calls"
    assert plain.choices[0].message.content == "Echo: hello there"  # no tools, no call


def test_n_returns_that_many_choices(client: OpenAI) -> None:
    reply = client.chat.completions.create(model="m", messages=MESSAGES, n=2)

    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.usage is not None and reply.usage.completion_tokens == 6


def test_logprobs_when_requested(fake: FakeUpstream, client: OpenAI) -> None:
    fake.default = Behavior(reply="a b", chunks=2)

    reply = client.chat.completions.create(
        model="m", messages=MESSAGES, logprobs=True, top_logprobs=2
    )

    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert "".join(t.token for t in logprobs.content) == "a b"
    assert all(t.logprob < 0 and len(t.top_logprobs) == 2 for t in logprobs.content)


def test_cached_tokens_are_reported(fake: FakeUpstream, client: OpenAI) -> None:
    fake.default = Behavior(cached_tokens=4)

    reply = client.chat.completions.create(model="m", messages=MESSAGES)

    assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == 4


def test_embeddings_are_deterministic_unit_vectors(fake: FakeUpstream, client: OpenAI) -> None:
    # The SDK asks for base64 float32 unless told otherwise; both encodings must agree.
    sdk = client.embeddings.create(model="text-embedding-3-small", input=["red", "blue red"])
    floats = client.embeddings.create(model="e", input="red", encoding_format="float")
    sized = client.embeddings.create(model="e", input="red", dimensions=16)

    assert [d.index for d in sdk.data] == [0, 1]
    assert len(sdk.data[0].embedding) == 8
    assert sdk.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert sdk.data[0].embedding != sdk.data[1].embedding
    assert sum(v * v for v in floats.data[0].embedding) == pytest.approx(1.0)
    assert len(sized.data[0].embedding) == 16
    assert sdk.usage.prompt_tokens == sdk.usage.total_tokens == 3
    assert fake.requests[0].json["encoding_format"] == "base64"


def test_models_list(client: OpenAI) -> None:
    models = [m.id for m in client.models.list()]

    assert "gpt-4o-mini" in models and "text-embedding-3-small" in models


def test_rate_limit_raises_with_retry_after(fake: FakeUpstream, client: OpenAI) -> None:
    fake.enqueue(Fault.status(429, retry_after=1))

    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="m", messages=MESSAGES)

    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.code == "rate_limit_exceeded"
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices  # then default


def test_expected_api_key_is_required() -> None:
    with FakeUpstream.in_thread(api_key="sk-right") as fake:
        url = fake.url + "/v1"
        with (
            OpenAI(base_url=url, api_key="sk-wrong", max_retries=0) as wrong,
            OpenAI(base_url=url, api_key="sk-right", max_retries=0) as right,
        ):
            with pytest.raises(openai.AuthenticationError) as caught:
                wrong.chat.completions.create(model="m", messages=MESSAGES)
            assert right.chat.completions.create(model="m", messages=MESSAGES).choices

    assert caught.value.code == "invalid_api_key"


def test_scripted_items_are_consumed_in_order_then_default(
    fake: FakeUpstream, client: OpenAI
) -> None:
    fake.enqueue(Fault.status(500), Behavior(reply="scripted"), Fault.status(503))

    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=MESSAGES)
    scripted = client.chat.completions.create(model="m", messages=MESSAGES)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="m", messages=MESSAGES)
    after = client.chat.completions.create(model="m", messages=MESSAGES)

    assert scripted.choices[0].message.content == "scripted"
    assert caught.value.status_code == 503
    assert after.choices[0].message.content == "Echo: hello there"
    assert fake.pending == 0


def test_faults_scoped_to_a_path_wait_for_that_path(fake: FakeUpstream, client: OpenAI) -> None:
    fake.enqueue(Fault.status(429), path="/v1/embeddings")

    assert client.chat.completions.create(model="m", messages=MESSAGES).choices
    assert fake.pending == 1
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="e", input="x")


# -- OpenAI dialect, AsyncOpenAI against the fake in the test's event loop -----------------


async def test_requests_are_recorded(afake: FakeUpstream, aclient: AsyncOpenAI) -> None:
    before = time.time()
    await aclient.chat.completions.create(model="m", messages=MESSAGES, temperature=0.5)

    recorded = afake.last_request
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.headers["authorization"] == "Bearer sk-test"
    assert recorded.json == {"model": "m", "messages": MESSAGES, "temperature": 0.5}
    assert before <= recorded.at <= time.time()
    assert afake.request_count == 1
    afake.reset()
    assert afake.requests == [] and afake.request_count == 0


async def test_async_stream(afake: FakeUpstream, aclient: AsyncOpenAI) -> None:
    stream = await aclient.chat.completions.create(model="m", messages=MESSAGES, stream=True)

    text = "".join([c.choices[0].delta.content or "" async for c in stream])

    assert text == "Echo: hello there"


async def test_default_chunk_delay_spaces_the_events(
    afake: FakeUpstream, aclient: AsyncOpenAI
) -> None:
    afake.default = Behavior(chunks=3, chunk_delay_s=0.03)

    started = time.monotonic()
    stream = await aclient.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    chunks = [c async for c in stream]

    assert len(chunks) == 1 + 3 + 1  # role, three pieces, finish
    assert time.monotonic() - started >= 4 * 0.03


async def test_latency_and_delay_fault_add_up(afake: FakeUpstream, aclient: AsyncOpenAI) -> None:
    afake.default = Behavior(latency_s=0.05)
    afake.enqueue(Fault.delay(0.3))

    started = time.monotonic()
    await aclient.chat.completions.create(model="m", messages=MESSAGES)
    delayed = time.monotonic() - started
    started = time.monotonic()
    await aclient.chat.completions.create(model="m", messages=MESSAGES)
    plain = time.monotonic() - started

    assert delayed >= 0.35
    assert 0.05 <= plain < 0.3  # the scripted delay was used once


async def test_reset_is_a_connection_error_not_a_cancellation(
    afake: FakeUpstream, aclient: AsyncOpenAI, http: aiohttp.ClientSession
) -> None:
    afake.enqueue(Fault.reset(), Fault.reset())

    with pytest.raises(openai.APIConnectionError):
        await aclient.chat.completions.create(model="m", messages=MESSAGES)
    with pytest.raises(aiohttp.ClientOSError):
        await http.post(afake.url + "/v1/embeddings", json={"input": "x"})

    assert afake.cancelled == 0


async def test_hang_ends_in_client_timeout_and_counts_the_cancellation(
    afake: FakeUpstream, aclient: AsyncOpenAI
) -> None:
    afake.enqueue(Fault.hang())
    task = asyncio.create_task(
        aclient.chat.completions.create(model="m", messages=MESSAGES, timeout=0.3)
    )
    await _eventually(lambda: afake.in_flight == 1)

    with pytest.raises(openai.APITimeoutError):
        await task

    await _eventually(lambda: afake.cancelled == 1)
    assert afake.in_flight == 0


async def test_truncated_stream_ends_without_done(
    afake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    afake.enqueue(Fault.truncate_stream(after_chunks=2))
    received = b""

    async with http.post(
        afake.url + "/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES, "stream": True},
    ) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in response.content.iter_any():
                received += data

    events = _sse_events(received.decode())
    assert len(events) == 2
    assert all(json.loads(data)["object"] == "chat.completion.chunk" for _, data in events)
    assert b"[DONE]" not in received
    assert afake.cancelled == 0


async def test_truncated_stream_is_a_connection_error_for_the_sdk(
    afake: FakeUpstream, aclient: AsyncOpenAI
) -> None:
    afake.enqueue(Fault.truncate_stream(after_chunks=3))
    stream = await aclient.chat.completions.create(model="m", messages=MESSAGES, stream=True)

    with pytest.raises(openai.APIConnectionError):
        async for _ in stream:
            pass


async def test_truncated_plain_body(afake: FakeUpstream, http: aiohttp.ClientSession) -> None:
    afake.enqueue(Fault.truncate_stream())

    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(afake.url + "/v1/embeddings", json={"input": "x"}) as response:
            await response.read()


async def test_malformed_body_is_not_json(
    afake: FakeUpstream, aclient: AsyncOpenAI, http: aiohttp.ClientSession
) -> None:
    afake.enqueue(Fault.malformed(), Fault.malformed())

    async with http.post(
        afake.url + "/v1/chat/completions", json={"model": "m", "messages": MESSAGES}
    ) as response:
        assert response.status == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(await response.read())
    # The SDK lets the decoder's error through as it is, not as an openai.APIError.
    with pytest.raises(json.JSONDecodeError):
        await aclient.chat.completions.create(model="m", messages=MESSAGES)


async def test_slow_stream_and_client_leaving_counts_a_cancellation(
    afake: FakeUpstream, aclient: AsyncOpenAI
) -> None:
    afake.enqueue(Fault.slow_stream(chunk_delay_s=0.1))
    stream = await aclient.chat.completions.create(model="m", messages=MESSAGES, stream=True)

    started = time.monotonic()
    await anext(aiter(stream))
    await anext(aiter(stream))
    assert time.monotonic() - started >= 0.09
    await stream.close()

    await _eventually(lambda: afake.cancelled == 1)


async def test_stream_error_event_midway(afake: FakeUpstream, aclient: AsyncOpenAI) -> None:
    afake.enqueue(Fault.stream_error(after_chunks=2, message="overloaded, try later"))
    stream = await aclient.chat.completions.create(model="m", messages=MESSAGES, stream=True)

    received = []
    with pytest.raises(openai.APIError, match="overloaded, try later"):
        async for chunk in stream:
            received.append(chunk)

    assert len(received) == 2


async def test_bad_requests_get_errors_in_the_dialect(
    afake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    async with http.post(afake.url + "/v1/chat/completions", data=b"{not json") as bad:
        assert bad.status == 400
        assert (await bad.json())["error"]["type"] == "invalid_request_error"
    async with http.get(afake.url + "/v1/nowhere") as missing:
        assert missing.status == 404
        assert (await missing.json())["error"] == {
            "message": "Invalid URL (GET /v1/nowhere)",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    async with http.post(
        afake.url + "/v1/messages", data=b"[", headers=ANTHROPIC_HEADERS
    ) as bad_anthropic:
        assert bad_anthropic.status == 400
        assert (await bad_anthropic.json())["type"] == "error"


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(
    afake: FakeUpstream,
) -> None:
    afake.enqueue(Fault.delay(0.05))  # the first answer waits; the second must not overtake it

    def request(text: str) -> bytes:
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]})
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}"
        return f"{head}\r\n\r\n{body}".encode()

    reader, writer = await asyncio.open_connection("127.0.0.1", afake.port)
    writer.write(request("first") + request("second"))
    replies = []
    for _ in range(2):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        replies.append(json.loads(await reader.readexactly(length)))
    writer.close()

    assert [r["choices"][0]["message"]["content"] for r in replies] == [
        "Echo: first",
        "Echo: second",
    ]


# -- Anthropic dialect -----------------------------------------------------------------


async def test_anthropic_message_json(afake: FakeUpstream, http: aiohttp.ClientSession) -> None:
    afake.default = Behavior(cached_tokens=100, cache_creation_tokens=20)
    request = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    }

    async with http.post(
        afake.url + "/v1/messages", json=request, headers=ANTHROPIC_HEADERS
    ) as response:
        assert response.status == 200
        message = await response.json()

    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["id"].startswith("msg_")
    assert message["model"] == "claude-sonnet-4-5"
    assert message["content"] == [{"type": "text", "text": "Echo: hello there"}]
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None
    assert message["usage"] == {
        "input_tokens": 2 + 2 + 3 + 3,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 100,
        "output_tokens": 3,
    }


async def test_anthropic_stream_event_sequence(
    afake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    afake.default = Behavior(reply="one two three", chunks=3)
    request = {"model": "claude-x", "max_tokens": 64, "messages": MESSAGES[1:], "stream": True}

    async with http.post(
        afake.url + "/v1/messages", json=request, headers=ANTHROPIC_HEADERS
    ) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = _sse_events(await response.text())

    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [json.loads(d) for _, d in events]
    assert [d["type"] for d in data] == names  # the data repeats the event name
    start = data[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == 2 + 3 + 3
    assert {"cache_creation_input_tokens", "cache_read_input_tokens"} <= set(start["usage"])
    assert data[1]["content_block"] == {"type": "text", "text": ""}
    assert "".join(d["delta"]["text"] for d in data[3:6]) == "one two three"
    assert {d["delta"]["type"] for d in data[3:6]} == {"text_delta"}
    assert data[7]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert data[7]["usage"] == {"output_tokens": 3}


async def test_anthropic_tool_use(afake: FakeUpstream, http: aiohttp.ClientSession) -> None:
    afake.default = Behavior(tool_call=("get_weather", '{"city":"Paris"}'), chunks=2)
    request = {"model": "c", "max_tokens": 64, "messages": MESSAGES[1:], "tools": [{}]}
    url = afake.url + "/v1/messages"

    async with http.post(url, json=request, headers=ANTHROPIC_HEADERS) as response:
        message = await response.json()
    async with http.post(
        url, json={**request, "stream": True}, headers=ANTHROPIC_HEADERS
    ) as response:
        data = [json.loads(d) for _, d in _sse_events(await response.text())]

    block = message["content"][0]
    assert message["stop_reason"] == "tool_use"
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
    assert (block["name"], block["input"]) == ("get_weather", {"city": "Paris"})
    assert data[1]["content_block"]["type"] == "tool_use"
    assert data[1]["content_block"]["input"] == {}
    deltas = [d["delta"] for d in data if d["type"] == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"input_json_delta"}
    assert json.loads("".join(d["partial_json"] for d in deltas)) == {"city": "Paris"}
    assert data[-2]["delta"]["stop_reason"] == "tool_use"


async def test_anthropic_headers_are_checked(http: aiohttp.ClientSession) -> None:
    request = {"model": "c", "max_tokens": 8, "messages": MESSAGES[1:]}
    async with FakeUpstream(api_key="sk-ant-test") as fake:
        url = fake.url + "/v1/messages"
        async with http.post(url, json=request, headers={"x-api-key": "sk-ant-test"}) as r:
            no_version = (r.status, await r.json())
        async with http.post(
            url, json=request, headers={**ANTHROPIC_HEADERS, "x-api-key": "wrong"}
        ) as r:
            wrong_key = (r.status, await r.json())
        async with http.post(url, json=request, headers=ANTHROPIC_HEADERS) as r:
            ok = r.status
        assert fake.pending == 0 and len(fake.requests) == 3

    assert no_version[0] == 400
    assert no_version[1]["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in no_version[1]["error"]["message"]
    assert wrong_key == (
        401,
        {
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        },
    )
    assert ok == 200


async def test_anthropic_without_an_expected_key_accepts_any(
    afake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    request = {"model": "c", "max_tokens": 8, "messages": MESSAGES[1:]}
    headers = {"anthropic-version": "2023-06-01"}

    async with http.post(afake.url + "/v1/messages", json=request, headers=headers) as r:
        assert r.status == 200


async def test_anthropic_errors_and_stream_error_event(
    afake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    afake.enqueue(Fault.status(429, retry_after=2.5), Fault.status(529), Fault.stream_error())
    request = {"model": "c", "max_tokens": 8, "messages": MESSAGES[1:]}
    url = afake.url + "/v1/messages"

    async with http.post(url, json=request, headers=ANTHROPIC_HEADERS) as r:
        limited = (r.status, r.headers.get("Retry-After"), await r.json())
    async with http.post(url, json=request, headers=ANTHROPIC_HEADERS) as r:
        overloaded = (r.status, await r.json())
    async with http.post(url, json={**request, "stream": True}, headers=ANTHROPIC_HEADERS) as r:
        events = _sse_events(await r.text())

    assert limited[:2] == (429, "2.5")
    assert limited[2]["type"] == "error"
    assert limited[2]["error"]["type"] == "rate_limit_error"
    assert overloaded[0] == 529 and overloaded[1]["error"]["type"] == "overloaded_error"
    assert [name for name, _ in events] == ["message_start", "error"]
    assert json.loads(events[1][1])["error"]["type"] == "overloaded_error"


async def test_anthropic_count_tokens(afake: FakeUpstream, http: aiohttp.ClientSession) -> None:
    request = {"model": "c", "messages": MESSAGES[1:]}

    async with http.post(
        afake.url + "/v1/messages/count_tokens", json=request, headers=ANTHROPIC_HEADERS
    ) as r:
        assert await r.json() == {"input_tokens": 2 + 3 + 3}


async def test_stopping_with_a_request_still_hanging_is_prompt() -> None:
    fake = FakeUpstream()
    await fake.start()
    fake.enqueue(Fault.hang())
    async with AsyncOpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0) as client:
        task = asyncio.create_task(client.chat.completions.create(model="m", messages=MESSAGES))
        await _eventually(lambda: fake.in_flight == 1)

        started = time.monotonic()
        await fake.stop()

        assert time.monotonic() - started < 0.5
        assert fake.cancelled == 0  # shutting down is not a client going away
        with pytest.raises(openai.APIConnectionError):
            await task


def test_in_thread_reports_a_port_already_taken(threaded_fake: FakeUpstream) -> None:
    with pytest.raises(OSError), FakeUpstream.in_thread(port=threaded_fake.port):
        pass


# -- command line --------------------------------------------------------------------------


def test_cli_serves_until_sigterm() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "keel.testing", "--port", str(port), "--reply", "pong"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            assert f"http://127.0.0.1:{port}" in process.stdout.readline()
            with OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0
            ) as client:
                reply = client.chat.completions.create(model="m", messages=MESSAGES)
            assert reply.choices[0].message.content == "pong"
        finally:
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=5)
    assert returncode == 0
