"""update_current_span and update_current_trace, as the spans show them."""

from __future__ import annotations

import logging

import pytest

import keel
from keel.sdk import Client
from tests.unit.sdk.collector import Collector
from tests.unit.sdk.conftest import Configure


def test_a_generation_gets_model_usage_and_an_explicit_output(
    sdk: Client, collector: Collector
) -> None:
    @keel.observe(kind="generation")
    def call_model(prompt: str) -> dict[str, str]:
        keel.update_current_span(
            model="gpt-4o-mini",
            response_model="gpt-4o-mini-2024-07-18",
            provider="openai",
            usage={"prompt_tokens": 12, "completion_tokens": 5, "cached_tokens": 2},
            output="the answer",
            metadata={"temperature": 0.2},
            attributes={"app.route": "/ask", "app.retries": 0},
        )
        return {"raw": "response object"}

    call_model("hi")
    assert keel.flush(5)
    span = collector.span("call_model")
    assert span.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert span.attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert span.attributes["gen_ai.provider.name"] == "openai"
    assert span.attributes["gen_ai.usage.input_tokens"] == 12
    assert span.attributes["gen_ai.usage.output_tokens"] == 5
    assert span.attributes["gen_ai.usage.cached_tokens"] == 2
    assert span.attributes["app.route"] == "/ask" and span.attributes["app.retries"] == 0
    assert span.json("keel.output") == "the answer"  # the explicit output wins
    assert span.json("keel.metadata") == {"temperature": 0.2}
    usage_attribute = next(a for a in span.raw["attributes"] if a["key"].endswith("input_tokens"))
    assert usage_attribute["value"] == {"intValue": "12"}


def test_trace_attributes_reach_the_spans_ending_after_the_update_and_the_root(
    configure: Configure, collector: Collector
) -> None:
    configure(release="1.4.0", environment="staging")

    @keel.observe
    def before() -> None:
        pass

    @keel.observe
    def identify() -> None:
        keel.update_current_trace(
            user_id="u-42",
            session_id="s-7",
            tags=["beta", "rag"],
            metadata={"plan": "pro"},
            environment="production",
        )
        keel.update_current_trace(tags=["rag", "eu"], metadata={"region": "eu"})

    @keel.observe
    def after() -> None:
        keel.update_current_span(metadata={"step": 3})

    @keel.observe
    def request() -> None:
        before()
        identify()
        after()

    request()
    assert keel.flush(5)

    assert "user.id" not in collector.span("before").attributes
    assert collector.span("before").attributes["keel.environment"] == "staging"
    for name in ("identify", "after", "request"):
        attributes = collector.span(name).attributes
        assert attributes["user.id"] == "u-42"
        assert attributes["session.id"] == "s-7"
        assert attributes["keel.tags"] == ["beta", "rag", "eu"]
        assert attributes["keel.release"] == "1.4.0"
        assert attributes["keel.environment"] == "production"
    assert collector.span("request").json("keel.metadata") == {"plan": "pro", "region": "eu"}
    assert collector.span("after").json("keel.metadata") == {
        "plan": "pro",
        "region": "eu",
        "step": 3,
    }
    resource = {
        a["key"]: a["value"]
        for a in collector.trace_requests()[0].body["resourceSpans"][0]["resource"]["attributes"]
    }
    assert resource["service.name"] == {"stringValue": "keel-app"}
    assert resource["service.version"] == {"stringValue": "1.4.0"}
    assert resource["deployment.environment.name"] == {"stringValue": "staging"}
    assert resource["telemetry.sdk.name"] == {"stringValue": "keel"}


def test_trace_name_input_and_output_go_to_the_root(sdk: Client, collector: Collector) -> None:
    @keel.observe
    def inner() -> None:
        keel.update_current_trace(name="chat turn", input="question", output="answer")

    @keel.observe
    def outer(x: int) -> int:
        inner()
        return x

    outer(1)
    assert keel.flush(5)
    root = collector.span("chat turn")
    assert root.parent is None
    assert root.json("keel.input") == "question" and root.json("keel.output") == "answer"


def test_updates_outside_a_span_are_ignored_with_one_warning(
    sdk: Client, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="keel.sdk"):
        keel.update_current_span(output="x")
        keel.update_current_span(output="y")
        keel.update_current_trace(user_id="u")
    assert keel.flush(5)
    assert collector.received == []
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "update_current_span() was called outside any span" in messages[0]
