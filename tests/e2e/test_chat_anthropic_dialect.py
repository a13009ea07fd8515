"""The official openai client calling a Claude model through Keel's Anthropic translation."""

from __future__ import annotations

import json

import openai
import pytest

from keel.testing import Behavior, FakeUpstream, Fault, ToolCall
from tests.e2e.conftest import RunningKeel

MESSAGES = "/v1/messages"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def test_chat_is_translated_both_ways_and_priced_with_cache_tokens(
    keel: RunningKeel, fake: FakeUpstream
) -> None:
    fake.default = Behavior(cached_tokens=30, cache_creation_tokens=10)
    reply = keel.client().chat.completions.create(
        model="claude",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        max_tokens=50,
        stop=["END"],
    )
    assert reply.choices[0].message.content == "Echo: hi"
    assert reply.choices[0].finish_reason == "stop"
    sent = fake.requests[-1]
    assert sent.path == MESSAGES
    assert sent.headers["x-api-key"] == "sk-fake" and "anthropic-version" in sent.headers
    assert sent.json["system"] in ("You are terse.", [{"type": "text", "text": "You are terse."}])
    [message] = sent.json["messages"]
    assert message["role"] == "user"
    assert message["content"] in ("hi", [{"type": "text", "text": "hi"}])
    assert sent.json["max_tokens"] == 50 and sent.json["stop_sequences"] == ["END"]

    usage = reply.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 30
    [span] = keel.spans()
    assert (span.provider, span.model) == ("anthropic", "claude-sonnet-4-5")
    assert span.usage is not None
    assert (span.usage.cache_read_tokens, span.usage.cache_write_tokens) == (30, 10)
    assert span.usage.input_tokens == usage.prompt_tokens
    uncached = span.usage.input_tokens - 40
    expected = (uncached * 3 + 30 * 0.3 + 10 * 3.75 + span.usage.output_tokens * 15) / 1e6
    assert span.cost_usd == pytest.approx(expected)


def test_stream_is_translated_with_usage_and_ttft(keel: RunningKeel, fake: FakeUpstream) -> None:
    fake.default = Behavior(reply="one two three", chunks=3, cached_tokens=5)
    chunks = list(
        keel.client().chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "count"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    [span] = keel.spans()
    assert span.stream and span.ttft_ms is not None
    assert span.usage is not None and span.usage.cache_read_tokens == 5
    assert span.usage.output_tokens == chunks[-1].usage.completion_tokens
    assert span.output[0]["message"]["content"] == "one two three"


def test_tool_calls_round_trip_through_anthropic(keel: RunningKeel, fake: FakeUpstream) -> None:
    fake.default = Behavior(tool_call=ToolCall("get_weather", '{"city": "Paris"}'))
    client = keel.client()
    reply = client.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
    )
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert reply.choices[0].finish_reason == "tool_calls"
    sent = fake.requests[-1].json
    assert sent["tools"][0]["name"] == "get_weather"
    assert sent["tools"][0]["input_schema"] == TOOLS[0]["function"]["parameters"]  # type: ignore[index]
    assert sent["tool_choice"] == {"type": "any"}

    # The tool's result goes back as a tool_result block.
    fake.default = Behavior(reply="It is sunny.")
    follow_up = client.chat.completions.create(
        model="claude",
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            reply.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
        ],
        tools=TOOLS,  # type: ignore[arg-type]
    )
    assert follow_up.choices[0].message.content == "It is sunny."
    blocks = fake.requests[-1].json["messages"][-1]["content"]
    assert blocks[0]["type"] == "tool_result" and blocks[0]["tool_use_id"] == call.id

    # And streamed tool calls come out as OpenAI tool_call deltas.
    fake.default = Behavior(tool_call=("get_weather", '{"city": "Oslo"}'), chunks=3)
    chunks = list(
        client.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "weather in Oslo?"}],
            tools=TOOLS,  # type: ignore[arg-type]
            stream=True,
        )
    )
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""  # type: ignore[union-attr,index]
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert json.loads(arguments) == {"city": "Oslo"}


def test_anthropic_errors_reach_the_client_in_openai_format(
    keel: RunningKeel, fake: FakeUpstream
) -> None:
    fake.enqueue(Fault.status(400, message="messages: roles must alternate"), path=MESSAGES)
    with pytest.raises(openai.BadRequestError) as caught:
        keel.client().chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "x"}]
        )
    assert "roles must alternate" in caught.value.message
    assert isinstance(caught.value.body, dict) and "message" in caught.value.body


def test_overloaded_529_is_retried(keel: RunningKeel, fake: FakeUpstream) -> None:
    fake.enqueue(Fault.status(529, error_type="overloaded_error"), path=MESSAGES)
    reply = keel.client().chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content == "Echo: x"
    [span] = keel.spans()
    assert [a.status for a in span.attempts] == [529, 200]


def test_n_above_one_is_refused_with_a_clear_400(keel: RunningKeel, fake: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        keel.client().chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "x"}], n=2
        )
    assert caught.value.body["param"] == "n"  # type: ignore[index]
    assert fake.request_count == 0


def test_embeddings_on_a_claude_alias_say_what_to_do(keel: RunningKeel) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        keel.client().embeddings.create(model="claude", input="x")
    assert "embeddings" in caught.value.message
