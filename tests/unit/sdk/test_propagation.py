"""Outgoing calls carry the current span's `traceparent`."""

from __future__ import annotations

import pytest
from openai.types.chat import ChatCompletionMessageParam

import keel
from keel.core.ids import parse_traceparent
from keel.sdk import Client
from tests.unit.sdk.collector import Collector

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def test_trace_headers_name_the_current_span(sdk: Client) -> None:
    assert keel.trace_headers() == {}
    with keel.span("outer") as span:
        parent = parse_traceparent(keel.trace_headers()["traceparent"])
    assert parent is not None
    assert (parent.trace_id, parent.span_id, parent.sampled) == (
        span.trace_id,
        span.span_id,
        True,
    )


def test_the_openai_client_sends_traceparent_with_every_request(
    sdk: Client, collector: Collector
) -> None:
    client = keel.openai_client(base_url=f"{collector.url}/v1", api_key="sk-test", max_retries=0)

    @keel.observe(kind="generation")
    def ask() -> str:
        answer = client.chat.completions.create(model="fast", messages=MESSAGES)
        return str(answer.choices[0].message.content)

    assert ask() == "hello"
    client.chat.completions.create(model="fast", messages=MESSAGES)  # outside any span
    assert keel.flush(5)

    inside, outside = collector.requests("/v1/chat/completions")
    span = collector.span("ask")
    assert inside.headers["traceparent"] == f"00-{span.trace_id}-{span.span_id}-01"
    assert inside.headers["authorization"] == "Bearer sk-test"
    assert "traceparent" not in outside.headers


async def test_the_async_openai_client_sends_the_current_tasks_span(
    sdk: Client, collector: Collector
) -> None:
    client = keel.async_openai_client(
        base_url=f"{collector.url}/v1", api_key="sk-test", max_retries=0
    )
    async with keel.span("turn") as span:
        await client.chat.completions.create(model="fast", messages=MESSAGES)
    await client.close()
    (request,) = collector.requests("/v1/chat/completions")
    assert request.headers["traceparent"] == f"00-{span.trace_id}-{span.span_id}-01"


def test_the_openai_client_defaults_to_the_keel_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    keel.configure(host="http://gateway.internal:4000", api_key="keel-key")
    openai_client = keel.openai_client()
    assert str(openai_client.base_url) == "http://gateway.internal:4000/v1/"
    assert openai_client.api_key == "keel-key"
