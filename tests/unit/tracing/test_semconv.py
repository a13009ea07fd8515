"""Instrumentation attribute families mapped to Keel's span model."""

from __future__ import annotations

from typing import Any

import orjson

from keel.tracing.otlp import OtlpSpan, decode_json
from keel.tracing.semconv import to_span

TRACE, SPAN = "ab" * 16, "cd" * 8


def _otlp(attributes: dict[str, Any], **fields: Any) -> OtlpSpan:
    base: dict[str, Any] = {
        "trace_id": TRACE, "span_id": SPAN, "parent_span_id": None, "name": "step", "kind": 1,
        "start_ns": 1_000_000_000, "end_ns": 3_500_000_000, "attributes": attributes,
    }  # fmt: skip
    return OtlpSpan(**{**base, **fields})


def test_openinference_llm_span_with_cache_and_reasoning_tokens() -> None:
    span = to_span(
        _otlp(
            {
                "openinference.span.kind": "LLM",
                "llm.model_name": "claude-sonnet-4-5",
                "llm.provider": "anthropic",
                "llm.token_count.prompt": 900,
                "llm.token_count.completion": 120,
                "llm.token_count.prompt_details.cache_read": 800,
                "llm.token_count.prompt_details.cache_write": 50,
                "llm.token_count.completion_details.reasoning": 40,
                "input.value": '{"messages": [{"role": "user", "content": "hi"}]}',
                "output.value": "plain text answer",
                "session.id": "s1",
                "tag.tags": ["beta", "rag"],
                "metadata": '{"tenant": "acme"}',
            }
        )
    )
    assert (span.kind, span.model, span.provider) == (
        "generation",
        "claude-sonnet-4-5",
        "anthropic",
    )
    assert span.usage is not None
    assert (span.usage.input_tokens, span.usage.output_tokens) == (900, 120)
    assert (span.usage.cache_read_tokens, span.usage.cache_write_tokens) == (800, 50)
    assert span.usage.reasoning_tokens == 40
    assert span.input == {"messages": [{"role": "user", "content": "hi"}]}
    assert span.output == "plain text answer"
    assert (span.session_id, span.tags, span.metadata) == (
        "s1",
        ["beta", "rag"],
        {"tenant": "acme"},
    )
    assert span.attributes == {}  # everything was mapped
    assert span.latency_ms == 2500.0


def test_kinds_from_each_family() -> None:
    cases = {
        "keel": ({"keel.span.kind": "rerank"}, "rerank"),
        "openinference": ({"openinference.span.kind": "retriever"}, "retrieval"),
        "genai embeddings": ({"gen_ai.operation.name": "embeddings"}, "embedding"),
        "genai tool": ({"gen_ai.operation.name": "execute_tool"}, "tool"),
        "traceloop": ({"traceloop.span.kind": "workflow"}, "chain"),
        "a model alone": ({"gen_ai.request.model": "gpt-4o"}, "generation"),
        "nothing": ({"http.method": "GET"}, "span"),
        "unknown keel kind": ({"keel.span.kind": "banana"}, "span"),
    }
    for name, (attributes, kind) in cases.items():
        assert to_span(_otlp(attributes)).kind == kind, name


def test_a_value_of_the_wrong_type_is_kept_not_mapped_and_the_span_survives() -> None:
    span = to_span(
        _otlp({"gen_ai.usage.input_tokens": "lots", "user.id": 42, "keel.metadata": "not json"})
    )
    assert span.usage is None
    assert span.user_id == "42"
    assert span.metadata == {"value": "not json"}


def test_only_a_total_is_counted_as_input() -> None:
    span = to_span(_otlp({"llm.token_count.total": 77}))
    assert span.usage is not None and span.usage.input_tokens == 77


def test_an_exception_event_explains_an_error_without_a_message() -> None:
    span = to_span(
        _otlp(
            {},
            status_code=2,
            events=[("exception", {"exception.type": "TimeoutError", "exception.message": "slow"})],
        )
    )
    assert (span.status, span.error) == ("error", "TimeoutError: slow")


def test_json_decoding_accepts_snake_case_and_every_value_kind() -> None:
    body = {
        "resource_spans": [
            {
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": TRACE.upper(),
                                "span_id": SPAN,
                                "name": "n",
                                "start_time_unix_nano": 5,
                                "end_time_unix_nano": "7",
                                "attributes": [
                                    {"key": "b", "value": {"bytesValue": "AAE="}},
                                    {"key": "kv", "value": {"kvlistValue": {"values": [
                                        {"key": "x", "value": {"doubleValue": 1.5}}]}}},
                                    {"key": "empty", "value": {}},
                                ],
                            }
                        ]
                    }
                ]
            }
        ]
    }  # fmt: skip
    decoded = decode_json(orjson.dumps(body))
    (otlp,) = decoded.spans
    assert otlp.trace_id == TRACE and (otlp.start_ns, otlp.end_ns) == (5, 7)
    assert otlp.attributes == {"b": b"\x00\x01", "kv": {"x": 1.5}, "empty": None}
    assert to_span(otlp).attributes["b"] == "0001"


def test_a_value_that_does_not_map_stays_an_attribute_and_the_next_name_is_used() -> None:
    span = to_span(
        _otlp(
            {
                "keel.span.kind": "banana",
                "openinference.span.kind": "TOOL",
                "gen_ai.usage.input_tokens": "lots",
                "gen_ai.usage.prompt_tokens": 12,
                "keel.tags": 7,
            }
        )
    )
    assert span.kind == "tool"
    assert span.usage is not None and span.usage.input_tokens == 12
    assert span.tags == []
    # nothing was dropped: what did not map is still there, as it came
    assert span.attributes == {
        "keel.span.kind": "banana",
        "gen_ai.usage.input_tokens": "lots",
        "keel.tags": 7,
    }
