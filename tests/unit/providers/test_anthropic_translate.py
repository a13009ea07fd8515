"""OpenAI <-> Anthropic translation of requests, answers and errors (no I/O)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from keel.core.errors import GatewayError
from keel.core.usage import Usage
from keel.providers.anthropic_response import (
    chat_completion,
    error_from_event,
    error_from_status,
    finish_reason,
)
from keel.providers.anthropic_translate import (
    DEFAULT_MAX_TOKENS,
    JSON_TOOL_NAME,
    to_anthropic_request,
)

MODEL = "claude-sonnet-4-5"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather at a place",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def translate(**body: Any) -> dict[str, Any]:
    return to_anthropic_request(body, MODEL, stream=False).payload


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


# -- request: scalars -----------------------------------------------------------


def test_minimal_request_gets_model_and_default_max_tokens() -> None:
    assert translate(messages=[user("hi")]) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": DEFAULT_MAX_TOKENS,
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 200}, 200),
        ({"max_completion_tokens": 200, "max_tokens": 100}, 200),
    ],
)
def test_max_tokens_prefers_max_completion_tokens(body: dict[str, Any], expected: int) -> None:
    assert translate(messages=[user("hi")], **body)["max_tokens"] == expected


def test_sampling_stop_user_and_stream_are_translated() -> None:
    body = {
        "messages": [user("hi")],
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": "END",
        "user": "u-42",
        "stream": True,
    }
    payload = to_anthropic_request(body, MODEL, stream=True).payload
    assert payload["temperature"] == 0.3
    assert payload["top_p"] == 0.9
    assert payload["stop_sequences"] == ["END"]
    assert payload["metadata"] == {"user_id": "u-42"}
    assert payload["stream"] is True
    assert translate(messages=[user("hi")], stop=["a", "b"])["stop_sequences"] == ["a", "b"]


def test_temperature_above_anthropic_range_is_clamped() -> None:
    assert translate(messages=[user("hi")], temperature=1.7)["temperature"] == 1.0


def test_fields_without_anthropic_equivalent_are_dropped() -> None:
    payload = translate(
        messages=[user("hi")],
        seed=7,
        frequency_penalty=0.5,
        presence_penalty=0.5,
        logprobs=True,
        top_logprobs=3,
        logit_bias={"1": 2},
        n=1,
    )
    assert set(payload) == {"model", "messages", "max_tokens"}


def test_n_above_one_is_a_client_error() -> None:
    with pytest.raises(GatewayError) as info:
        translate(messages=[user("hi")], n=2)
    assert info.value.status == 400
    assert info.value.param == "n"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "narrator", "content": "x"}]}, "messages"),
        ({"messages": [user([{"type": "input_audio", "input_audio": {}}])]}, "messages"),
        (
            {"messages": [user([{"type": "image_url", "image_url": {"url": "ftp://x"}}])]},
            "messages",
        ),
        ({"messages": [user("hi")], "functions": [{"name": "f"}]}, "functions"),
        ({"messages": [user("hi")], "tools": [{"type": "custom", "custom": {}}]}, "tools"),
        ({"messages": [user("hi")], "tools": ["get_weather"]}, "tools"),
        ({"messages": [user("hi")], "tools": [WEATHER], "tool_choice": "maybe"}, "tool_choice"),
        ({"messages": [user("hi")], "response_format": {"type": "xml"}}, "response_format"),
    ],
)
def test_untranslatable_requests_are_client_errors(body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as info:
        to_anthropic_request(body, MODEL, stream=False)
    assert (info.value.status, info.value.param) == (400, param)


def test_the_client_body_is_not_mutated() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "s", "cache_control": {"type": "ephemeral"}},
            user([{"type": "text", "text": "a"}]),
            {"role": "assistant", "content": "b  "},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "response_format": {"type": "json_object"},
    }
    before = copy.deepcopy(body)
    to_anthropic_request(body, MODEL, stream=True)
    assert body == before


# -- request: system prompt -----------------------------------------------------


def test_single_system_message_becomes_a_string() -> None:
    payload = translate(messages=[{"role": "system", "content": "Be brief."}, user("hi")])
    assert payload["system"] == "Be brief."
    assert payload["messages"] == [{"role": "user", "content": "hi"}]


def test_several_system_and_developer_messages_become_blocks() -> None:
    payload = translate(
        messages=[
            {"role": "system", "content": "one"},
            user("hi"),
            {"role": "developer", "content": [{"type": "text", "text": "two"}]},
        ]
    )
    assert payload["system"] == [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]


def test_system_cache_control_keeps_block_form() -> None:
    cache = {"type": "ephemeral"}
    part_level = translate(
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "s", "cache_control": cache}]},
            user("hi"),
        ]
    )
    message_level = translate(
        messages=[{"role": "system", "content": "s", "cache_control": cache}, user("hi")]
    )
    expected = [{"type": "text", "text": "s", "cache_control": cache}]
    assert part_level["system"] == expected
    assert message_level["system"] == expected


# -- request: content -----------------------------------------------------------


def test_multipart_user_content_with_images_and_cache_control() -> None:
    cache = {"type": "ephemeral"}
    payload = translate(
        messages=[
            user(
                [
                    {"type": "text", "text": "What is this?", "cache_control": cache},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
                    {
                        "type": "file",
                        "file": {"file_data": "data:application/pdf;base64,JVBERi0x"},
                    },
                ]
            )
        ]
    )
    assert payload["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?", "cache_control": cache},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"},
        },
        {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
        },
    ]


def test_consecutive_same_role_messages_are_merged() -> None:
    payload = translate(
        messages=[
            user("a"),
            user([{"type": "text", "text": "b"}]),
            {"role": "assistant", "content": "c"},
            {"role": "assistant", "content": "d"},
            user("e"),
        ]
    )
    assert payload["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}],
        },
        {"role": "user", "content": "e"},
    ]


def test_final_assistant_prefill_loses_trailing_whitespace() -> None:
    payload = translate(messages=[user("hi"), {"role": "assistant", "content": "Sure: \n"}])
    assert payload["messages"][-1] == {"role": "assistant", "content": "Sure:"}


# -- request: tools -------------------------------------------------------------


def test_tools_are_translated() -> None:
    no_params = {"type": "function", "function": {"name": "now"}}
    payload = translate(messages=[user("hi")], tools=[WEATHER, no_params])
    assert payload["tools"] == [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            "description": "Weather at a place",
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in payload


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("none", False, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice(choice: Any, parallel: Any, expected: dict[str, Any]) -> None:
    body: dict[str, Any] = {"messages": [user("hi")], "tools": [WEATHER]}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert translate(**body)["tool_choice"] == expected


def test_tool_choice_without_tools_is_dropped() -> None:
    payload = translate(messages=[user("hi")], tool_choice="required", parallel_tool_calls=False)
    assert "tool_choice" not in payload and "tools" not in payload


def test_assistant_tool_calls_and_tool_results_round_trip() -> None:
    payload = translate(
        messages=[
            user("Weather in Paris and Rome?"),
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "toolu_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {
                "role": "tool",
                "tool_call_id": "toolu_2",
                "content": [{"type": "text", "text": "25C"}],
            },
            user("Thanks, which is warmer?"),
        ],
        tools=[WEATHER],
    )
    assert payload["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
        ],
    }
    assert payload["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
            {
                "type": "tool_result",
                "tool_use_id": "toolu_2",
                "content": [{"type": "text", "text": "25C"}],
            },
            {"type": "text", "text": "Thanks, which is warmer?"},
        ],
    }
    assert len(payload["messages"]) == 3


def test_tool_results_go_first_in_a_merged_user_turn() -> None:
    payload = translate(
        messages=[
            {
                "role": "assistant",
                "tool_calls": [{"id": "t1", "function": {"name": "now", "arguments": ""}}],
            },
            user("also:"),
            {"role": "tool", "tool_call_id": "t1", "content": "noon"},
        ]
    )
    assert payload["messages"][0]["content"][0]["input"] == {}
    assert [b["type"] for b in payload["messages"][1]["content"]] == ["tool_result", "text"]


def test_tool_call_arguments_that_are_not_a_json_object_are_rejected() -> None:
    call = {"id": "t1", "function": {"name": "f", "arguments": "{broken"}}
    with pytest.raises(GatewayError):
        translate(messages=[user("hi"), {"role": "assistant", "tool_calls": [call]}])


# -- request: response_format ---------------------------------------------------

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def test_json_schema_uses_a_forced_tool() -> None:
    request = to_anthropic_request(
        {
            "messages": [user("hi")],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": SCHEMA},
            },
        },
        MODEL,
        stream=False,
    )
    assert request.json_tool == JSON_TOOL_NAME
    [tool] = request.payload["tools"]
    assert tool["name"] == JSON_TOOL_NAME and tool["input_schema"] == SCHEMA
    assert request.payload["tool_choice"] == {"type": "tool", "name": JSON_TOOL_NAME}
    assert "system" not in request.payload


def test_json_schema_with_client_tools_falls_back_to_an_instruction() -> None:
    request = to_anthropic_request(
        {
            "messages": [{"role": "system", "content": "Be brief."}, user("hi")],
            "tools": [WEATHER],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": SCHEMA},
            },
        },
        MODEL,
        stream=False,
    )
    assert request.json_tool is None
    assert [t["name"] for t in request.payload["tools"]] == ["get_weather"]
    first, instruction = request.payload["system"]
    assert first == {"type": "text", "text": "Be brief."}
    assert '"required":["answer"]' in instruction["text"]


def test_json_object_adds_a_system_instruction() -> None:
    payload = translate(messages=[user("hi")], response_format={"type": "json_object"})
    assert "JSON object" in payload["system"]


# -- response -------------------------------------------------------------------


def message(content: list[dict[str, Any]], stop_reason: str = "end_turn", **usage: int) -> Any:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, **usage},
    }


def test_text_answer_becomes_a_chat_completion() -> None:
    doc = message([{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}])
    response, usage = chat_completion(doc, created=1700000000, model=MODEL)
    assert response == {
        "id": "msg_01",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-sonnet-4-5-20250929",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }
    assert usage == Usage(input_tokens=10, output_tokens=5)


def test_tool_use_answer_becomes_tool_calls() -> None:
    doc = message(
        [
            {"type": "thinking", "thinking": "hmm", "signature": "x"},
            {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}},
        ],
        stop_reason="tool_use",
    )
    response, _ = chat_completion(doc, created=0, model=MODEL)
    choice = response["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "toolu_9",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
            }
        ],
    }


def test_forced_json_tool_answer_becomes_message_text() -> None:
    doc = message(
        [{"type": "tool_use", "id": "t", "name": JSON_TOOL_NAME, "input": {"answer": "42"}}],
        stop_reason="tool_use",
    )
    response, _ = chat_completion(doc, created=0, model=MODEL, json_tool=JSON_TOOL_NAME)
    choice = response["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": '{"answer":"42"}'}
    assert choice["finish_reason"] == "stop"


def test_usage_counts_cache_reads_and_writes_as_prompt_tokens() -> None:
    doc = message(
        [{"type": "text", "text": "ok"}],
        cache_read_input_tokens=1000,
        cache_creation_input_tokens=200,
    )
    response, usage = chat_completion(doc, created=0, model=MODEL)
    assert response["usage"] == {
        "prompt_tokens": 1210,
        "completion_tokens": 5,
        "total_tokens": 1215,
        "prompt_tokens_details": {"cached_tokens": 1000},
    }
    assert usage == Usage(
        input_tokens=1210, output_tokens=5, cache_read_tokens=1000, cache_write_tokens=200
    )


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reasons(stop_reason: Any, expected: str) -> None:
    assert finish_reason(stop_reason) == expected


def test_answer_that_is_not_a_message_is_malformed() -> None:
    from keel.core.errors import UpstreamError

    with pytest.raises(UpstreamError) as info:
        chat_completion({"type": "error"}, created=0, model=MODEL)
    assert info.value.kind == "malformed"


# -- errors ---------------------------------------------------------------------


def test_error_body_is_rewritten_in_openai_shape() -> None:
    body = orjson.dumps(
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "max_tokens: too large"},
            "request_id": "req_1",
        }
    )
    error = error_from_status(400, body, None)
    assert (error.kind, error.status, error.message) == ("http", 400, "max_tokens: too large")
    assert not error.retryable
    assert error.body is not None
    assert orjson.loads(error.body) == {
        "error": {
            "message": "max_tokens: too large",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


def test_rate_limit_keeps_retry_after() -> None:
    body = b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'
    error = error_from_status(429, body, 12.0)
    assert (error.status, error.retry_after_s, error.retryable) == (429, 12.0, True)


def test_error_body_that_is_not_anthropic_json_is_not_relayed() -> None:
    error = error_from_status(502, b"<html>Bad Gateway</html>", None)
    assert (error.status, error.body) == (502, None)
    assert "502" in error.message


@pytest.mark.parametrize(
    ("error_type", "status"),
    [("overloaded_error", 529), ("rate_limit_error", 429), ("api_error", 500), ("odd", 500)],
)
def test_stream_error_event_status_follows_its_type(error_type: str, status: int) -> None:
    error = error_from_event({"type": "error", "error": {"type": error_type, "message": "m"}})
    assert (error.kind, error.status, error.message) == ("http", status, "m")
