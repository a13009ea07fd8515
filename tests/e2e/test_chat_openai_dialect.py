"""The official openai client through Keel to an OpenAI-dialect upstream: answers and records."""

from __future__ import annotations

import json

import pytest

from keel.testing import Behavior, FakeUpstream, Fault, ToolCall
from tests.e2e.conftest import RunningKeel


def test_chat_answer_reaches_client_and_is_recorded_with_usage_and_cost(
    keel: RunningKeel, fake: FakeUpstream
) -> None:
    client = keel.client()
    reply = client.chat.completions.create(
        model="fast",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        temperature=0.2,
        extra_headers={
            "x-keel-user": "u-42",
            "x-keel-session": "s-1",
            "x-keel-tags": "beta, web",
            "x-keel-metadata": '{"feature": "search"}',
        },
    )
    assert reply.choices[0].message.content == "Echo: hi"
    # Keel sent the upstream model name, not the alias.
    assert fake.requests[-1].json["model"] == "gpt-4o-mini"

    [span] = keel.spans()
    assert span.kind == "generation" and span.status == "ok" and span.status_code == 200
    assert (span.alias, span.provider, span.model) == ("fast", "openai", reply.model)
    assert span.deployment == "fast[0]"
    assert span.user_id == "u-42" and span.session_id == "s-1"
    assert span.tags == ["beta", "web"] and span.metadata == {"feature": "search"}
    assert span.params["temperature"] == 0.2
    assert span.input[1] == {"role": "user", "content": "hi"}
    assert span.output[0]["message"]["content"] == "Echo: hi"
    assert span.usage is not None and not span.usage.estimated
    assert span.usage.input_tokens == reply.usage.prompt_tokens  # type: ignore[union-attr]
    assert span.usage.output_tokens == reply.usage.completion_tokens  # type: ignore[union-attr]
    expected = (span.usage.input_tokens * 0.15 + span.usage.output_tokens * 0.6) / 1e6
    assert span.cost_usd == pytest.approx(expected) and not span.unpriced
    assert span.price is not None and span.price["input"] == 0.15
    assert span.latency_ms > 0 and span.ttft_ms is None
    assert [a.outcome for a in span.attempts] == ["ok"]


def test_openai_user_field_is_the_user_when_no_header(keel: RunningKeel) -> None:
    keel.client().chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "x"}], user="end-user-7"
    )
    [span] = keel.spans()
    assert span.user_id == "end-user-7"


def test_stream_relays_chunks_and_records_ttft_and_upstream_usage(
    keel: RunningKeel, fake: FakeUpstream
) -> None:
    fake.default = Behavior(reply="one two three four five", chunks=5)
    stream = keel.client().chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "count"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "one two three four five"
    # The client did not ask for usage: Keel asked upstream for it but strips that chunk,
    # so code doing chunk.choices[0] never meets an empty choices list.
    assert all(c.choices for c in chunks)
    assert fake.requests[-1].json["stream_options"] == {"include_usage": True}

    [span] = keel.spans()
    assert span.stream and span.status == "ok"
    assert span.ttft_ms is not None and 0 < span.ttft_ms <= span.latency_ms
    assert span.usage is not None and not span.usage.estimated and span.usage.output_tokens > 0
    assert span.output[0]["message"]["content"] == "one two three four five"
    assert span.output[0]["finish_reason"] == "stop"
    assert span.cost_usd is not None and span.cost_usd > 0


def test_stream_with_include_usage_gives_client_the_usage_chunk(keel: RunningKeel) -> None:
    chunks = list(
        keel.client().chat.completions.create(
            model="fast",
            messages=[{"role": "user", "content": "hello there"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    [span] = keel.spans()
    assert span.usage is not None
    assert span.usage.input_tokens == chunks[-1].usage.prompt_tokens


def test_tools_response_format_n_stop_seed_logprobs_pass_through_untouched(
    keel: RunningKeel, fake: FakeUpstream
) -> None:
    fake.default = Behavior(tool_call=ToolCall("get_weather", '{"city": "Paris"}'))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    schema = {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
    }
    reply = keel.client().chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=tools,  # type: ignore[arg-type]
        tool_choice="auto",
        response_format=schema,  # type: ignore[arg-type]
        n=2,
        stop=["\n\n"],
        seed=7,
        logprobs=True,
        top_logprobs=2,
    )
    sent = fake.requests[-1].json
    for key, value in {
        "tools": tools,
        "tool_choice": "auto",
        "response_format": schema,
        "n": 2,
        "stop": ["\n\n"],
        "seed": 7,
        "logprobs": True,
        "top_logprobs": 2,
    }.items():
        assert sent[key] == value, key
    assert len(reply.choices) == 2
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert reply.choices[0].finish_reason == "tool_calls"
    [span] = keel.spans()
    assert span.params["tools"] == tools and span.params["n"] == 2


def test_streamed_tool_call_is_assembled_in_the_span(keel: RunningKeel, fake: FakeUpstream) -> None:
    fake.default = Behavior(tool_call=("lookup", '{"q": "keel"}'), chunks=3)
    chunks = list(
        keel.client().chat.completions.create(
            model="fast",
            messages=[{"role": "user", "content": "look it up"}],
            tools=[{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
            stream=True,
        )
    )
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""  # type: ignore[union-attr,index]
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert json.loads(arguments) == {"q": "keel"}
    [span] = keel.spans()
    call = span.output[0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "lookup"
    assert json.loads(call["function"]["arguments"]) == {"q": "keel"}
    assert span.output[0]["finish_reason"] == "tool_calls"


def test_embeddings_and_models(keel: RunningKeel) -> None:
    client = keel.client()
    result = client.embeddings.create(model="embed", input=["a", "b c"])
    assert len(result.data) == 2 and len(result.data[0].embedding) > 0
    models = sorted(m.id for m in client.models.list())
    assert models == ["claude", "embed", "fast"]
    [span] = keel.spans()
    assert span.kind == "embedding" and span.model == "text-embedding-3-small"
    assert span.usage is not None and span.usage.input_tokens == result.usage.prompt_tokens
    assert span.cost_usd == pytest.approx(span.usage.input_tokens * 0.02 / 1e6)
    assert span.input == ["a", "b c"]


def test_response_names_its_trace(keel: RunningKeel) -> None:
    raw = keel.client().chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "x"}]
    )
    [span] = keel.spans()
    assert raw.headers["x-keel-trace-id"] == span.trace_id


def test_incoming_traceparent_is_continued(keel: RunningKeel) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    keel.client().chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"traceparent": f"00-{trace_id}-{parent}-01"},
    )
    [span] = keel.spans()
    assert span.trace_id == trace_id and span.parent_span_id == parent


def test_unknown_model_price_is_recorded_unpriced_not_zero(
    keel_factory: object, fake: FakeUpstream
) -> None:
    from tests.e2e.conftest import KeelFactory, fake_config

    config = fake_config(fake).replace("model: gpt-4o-mini", "model: my-local-llama")
    running = keel_factory(config)  # type: ignore[operator]
    assert isinstance(running, RunningKeel)
    _ = KeelFactory
    running.client().chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "x"}]
    )
    [span] = running.spans()
    assert span.usage is not None and span.usage.input_tokens > 0
    assert span.unpriced and span.cost_usd is None and span.price is None


def test_price_override_from_config_wins(keel_factory: object, fake: FakeUpstream) -> None:
    from tests.e2e.conftest import fake_config

    config = fake_config(fake, prices="{gpt-4o-mini: {input: 1000, output: 2000}}")
    running: RunningKeel = keel_factory(config)  # type: ignore[operator]
    running.client().chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "x"}]
    )
    [span] = running.spans()
    assert span.usage is not None and span.price == {
        "input": 1000.0,
        "output": 2000.0,
        "cache_read": 1000.0,
        "cache_write": 1000.0,
    }
    expected = (span.usage.input_tokens * 1000 + span.usage.output_tokens * 2000) / 1e6
    assert span.cost_usd == pytest.approx(expected)


def test_capture_off_records_metadata_only(keel_factory: object, fake: FakeUpstream) -> None:
    from tests.e2e.conftest import fake_config

    config = fake_config(fake).replace("capture: {messages: true}", "capture: {messages: false}")
    running: RunningKeel = keel_factory(config)  # type: ignore[operator]
    running.client().chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "secret"}]
    )
    [span] = running.spans()
    assert span.input is None and span.output is None
    assert span.usage is not None and span.cost_usd is not None


def test_cached_prompt_tokens_are_recorded_and_priced(
    keel: RunningKeel, fake: FakeUpstream
) -> None:
    fake.enqueue(Fault.answer(Behavior(cached_tokens=4)))
    keel.client().chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "a b c d e f g h"}]
    )
    [span] = keel.spans()
    assert span.usage is not None and span.usage.cache_read_tokens == 4
    usage = span.usage
    expected = ((usage.input_tokens - 4) * 0.15 + 4 * 0.075 + usage.output_tokens * 0.6) / 1e6
    assert span.cost_usd == pytest.approx(expected)
