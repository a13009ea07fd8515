"""OTLP/HTTP into a running Keel: the official OpenTelemetry SDK and exporter, and OTLP/JSON."""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import httpx2 as httpx
import orjson
import pytest
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from keel.core.spans import Span
from keel.testing import FakeUpstream
from keel.tracing.semconv import SPAN_KINDS
from tests.e2e.conftest import KeelFactory, RunningKeel, fake_config

ALL_KINDS = tuple(SPAN_KINDS)
TRACE = "5b8efff798038103d269b633813fc60c"
ROOT = "eee19b7ec3c1b174"
CHILD = "eee19b7ec3c1b173"


@pytest.fixture
def tracer_provider(keel: RunningKeel) -> Iterator[TracerProvider]:
    resource = Resource.create(
        {
            "service.name": "rag-app",
            "service.version": "1.4.2",
            "deployment.environment.name": "staging",
        }
    )
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=keel.url + "/v1/traces", timeout=5)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def _by_name(spans: list[Span]) -> dict[str, Span]:
    return {span.name: span for span in spans}


def test_the_opentelemetry_sdk_lands_one_tree_with_mapped_fields(
    keel: RunningKeel, tracer_provider: TracerProvider
) -> None:
    tracer = tracer_provider.get_tracer("rag", "0.1")
    with tracer.start_as_current_span("answer question") as root:
        root.set_attribute("user.id", "alice")
        root.set_attribute("session.id", "conv-7")
        root.set_attribute("app.custom", "kept as it is")
        with tracer.start_as_current_span("search") as search:
            search.set_attribute("openinference.span.kind", "RETRIEVER")
            search.set_attribute("input.value", "what is keel?")
            search.set_attribute("retrieval.documents.count", 3)
        with tracer.start_as_current_span("chat gpt-4o-mini") as llm:
            llm.set_attribute("gen_ai.operation.name", "chat")
            llm.set_attribute("gen_ai.provider.name", "openai")
            llm.set_attribute("gen_ai.request.model", "gpt-4o-mini")
            llm.set_attribute("gen_ai.usage.input_tokens", 1000)
            llm.set_attribute("gen_ai.usage.output_tokens", 200)
            llm.set_attribute(
                "gen_ai.input.messages",
                orjson.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
                ).decode(),
            )
        with tracer.start_as_current_span("rerank") as failing:
            failing.set_status(Status(StatusCode.ERROR, "reranker timed out"))

    spans = _by_name(keel.spans(kinds=ALL_KINDS, expected=4))
    root_span, search_span = spans["answer question"], spans["search"]
    llm_span, rerank_span = spans["chat gpt-4o-mini"], spans["rerank"]
    root_id = format(root.get_span_context().span_id, "016x")
    trace_id = format(root.get_span_context().trace_id, "032x")

    assert {s.trace_id for s in spans.values()} == {trace_id}
    assert root_span.parent_span_id is None
    assert search_span.parent_span_id == llm_span.parent_span_id == root_id
    assert (root_span.kind, search_span.kind, llm_span.kind) == ("span", "retrieval", "generation")
    assert root_span.user_id == "alice" and root_span.session_id == "conv-7"
    assert root_span.attributes["app.custom"] == "kept as it is"
    assert root_span.attributes["keel.release"] == "1.4.2"
    assert root_span.attributes["keel.environment"] == "staging"
    assert root_span.attributes["resource"]["service.name"] == "rag-app"
    assert search_span.input == "what is keel?"
    assert search_span.attributes["retrieval.documents.count"] == 3
    assert llm_span.provider == "openai" and llm_span.model == "gpt-4o-mini"
    assert llm_span.usage is not None
    assert (llm_span.usage.input_tokens, llm_span.usage.output_tokens) == (1000, 200)
    # the same price table as gateway calls: gpt-4o-mini at $0.15 / $0.60 per 1M tokens
    assert llm_span.cost_usd == pytest.approx((1000 * 0.15 + 200 * 0.60) / 1e6)
    assert llm_span.input == [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    assert llm_span.attributes["gen_ai.operation.name"] == "chat"
    assert rerank_span.status == "error" and rerank_span.error == "reranker timed out"
    assert llm_span.latency_ms >= 0 and root_span.end_time >= llm_span.end_time


def test_a_gateway_call_made_inside_an_otel_span_joins_its_tree(
    keel: RunningKeel, tracer_provider: TracerProvider
) -> None:
    tracer = tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handle request") as app_span:
        headers: dict[str, str] = {}
        propagate.inject(headers)
        keel.client().chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "hi"}], extra_headers=headers
        )
    spans = _by_name(keel.spans(kinds=ALL_KINDS, expected=2))
    gateway, app = spans["chat.completions"], spans["handle request"]
    assert gateway.trace_id == app.trace_id == format(app_span.get_span_context().trace_id, "032x")
    assert gateway.parent_span_id == app.span_id
    assert gateway.kind == "generation" and gateway.cost_usd is not None


def _json_request(*spans: dict[str, object]) -> dict[str, object]:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]
                },
                "scopeSpans": [{"scope": {"name": "openllmetry"}, "spans": list(spans)}],
            }
        ]
    }


def _json_span(
    span_id: str, name: str, *attributes: tuple[str, dict[str, object]], parent: str = ""
) -> dict[str, object]:
    span: dict[str, object] = {
        "traceId": TRACE,
        "spanId": span_id,
        "name": name,
        "kind": 3,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000250000000",
        "attributes": [{"key": key, "value": value} for key, value in attributes],
        "status": {"code": 1},
    }
    if parent:
        span["parentSpanId"] = parent
    return span


def test_otlp_json_gzipped_with_openllmetry_and_deprecated_names(keel: RunningKeel) -> None:
    body = _json_request(
        _json_span(ROOT, "workflow", ("traceloop.span.kind", {"stringValue": "workflow"})),
        _json_span(
            CHILD,
            "openai.chat",
            ("gen_ai.system", {"stringValue": "openai"}),
            ("gen_ai.request.model", {"stringValue": "gpt-4o-mini"}),
            ("gen_ai.usage.prompt_tokens", {"intValue": "12"}),
            ("gen_ai.usage.completion_tokens", {"intValue": 3}),
            ("gen_ai.prompt.0.role", {"stringValue": "user"}),
            ("gen_ai.prompt.0.content", {"stringValue": "hello"}),
            ("gen_ai.completion.0.role", {"stringValue": "assistant"}),
            ("gen_ai.completion.0.content", {"stringValue": "hi there"}),
            ("llm.is_streaming", {"boolValue": False}),
            ("tags", {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "2"}]}}),
            parent=ROOT,
        ),
    )
    answer = httpx.post(
        keel.url + "/v1/traces",
        content=gzip.compress(orjson.dumps(body)),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert answer.status_code == 200
    assert answer.json() == {}
    spans = _by_name(keel.spans(kinds=ALL_KINDS, expected=2))
    workflow, chat = spans["workflow"], spans["openai.chat"]
    assert workflow.kind == "chain" and chat.kind == "generation"
    assert chat.parent_span_id == ROOT and chat.trace_id == TRACE
    assert chat.provider == "openai"
    assert chat.usage is not None and (chat.usage.input_tokens, chat.usage.output_tokens) == (12, 3)
    assert chat.input == [{"role": "user", "content": "hello"}]
    assert chat.output == [{"role": "assistant", "content": "hi there"}]
    assert chat.attributes["llm.is_streaming"] is False
    assert chat.attributes["tags"] == ["a", 2]
    assert chat.start_time == 1700000000.0 and chat.latency_ms == pytest.approx(250.0)


def test_a_bad_span_is_refused_alone_and_reported_as_partial_success(keel: RunningKeel) -> None:
    body = _json_request(_json_span(ROOT, "good"), _json_span("not-hex", "bad"))
    answer = httpx.post(
        keel.url + "/v1/traces",
        content=orjson.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 200
    partial = answer.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "invalid span id" in partial["errorMessage"]
    assert [s.name for s in keel.spans(kinds=ALL_KINDS, expected=1)] == ["good"]


def test_bad_requests_get_otlp_status_errors(keel: RunningKeel) -> None:
    url = keel.url + "/v1/traces"
    wrong_type = httpx.post(url, content=b"x", headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    not_protobuf = httpx.post(
        url, content=b"\xff\xff\xff", headers={"Content-Type": "application/x-protobuf"}
    )
    assert not_protobuf.status_code == 400
    assert b"not an OTLP protobuf trace request" in not_protobuf.content  # google.rpc.Status
    not_json = httpx.post(url, content=b"{oops", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["code"] == 3
    bad_gzip = httpx.post(
        url,
        content=b"not gzip",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert bad_gzip.status_code == 400 and "gzip" in bad_gzip.json()["message"]


def test_protobuf_partial_success_names_the_refused_span(keel: RunningKeel) -> None:
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    for span_id, name in ((bytes.fromhex(ROOT), "kept"), (b"\x01\x02", "short id")):
        span = scope_spans.spans.add()
        span.trace_id, span.span_id, span.name = bytes.fromhex(TRACE), span_id, name
        span.start_time_unix_nano, span.end_time_unix_nano = (
            1_700_000_000 * 10**9,
            1_700_000_001 * 10**9,
        )
    answer = httpx.post(
        keel.url + "/v1/traces",
        content=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-protobuf"
    response = ExportTraceServiceResponse()
    response.ParseFromString(answer.content)
    assert response.partial_success.rejected_spans == 1
    assert "invalid span id" in response.partial_success.error_message
    assert [s.name for s in keel.spans(kinds=ALL_KINDS, expected=1)] == ["kept"]


def test_the_master_key_guards_the_receiver(keel_factory: KeelFactory, fake: FakeUpstream) -> None:
    running = keel_factory(
        fake_config(fake, auth="{master_key: env:KEEL_TEST_MASTER}"), {"KEEL_TEST_MASTER": "sk-m"}
    )
    body = orjson.dumps(_json_request(_json_span(ROOT, "guarded")))
    headers = {"Content-Type": "application/json"}
    refused = httpx.post(running.url + "/v1/traces", content=body, headers=headers)
    assert refused.status_code == 401 and refused.json()["code"] == 16
    allowed = httpx.post(
        running.url + "/v1/traces",
        content=body,
        headers={**headers, "Authorization": "Bearer sk-m"},
    )
    assert allowed.status_code == 200
    assert [s.name for s in running.spans(kinds=ALL_KINDS, expected=1)] == ["guarded"]


def test_otel_global_tracer_is_untouched() -> None:
    # the tests above use their own provider; nothing here installs a global one
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


def test_a_batch_the_queue_cannot_take_is_refused_whole_with_retry_after(
    keel_factory: KeelFactory, fake: FakeUpstream
) -> None:
    running = keel_factory(fake_config(fake, recording="{queue_size: 10}"))
    spans = [_json_span(f"{i + 1:016x}", f"step {i}") for i in range(11)]
    answer = httpx.post(
        running.url + "/v1/traces",
        content=orjson.dumps(_json_request(*spans)),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 503  # OTLP exporters retry this, honouring Retry-After
    assert answer.headers["retry-after"] == "1"
    assert "queue is full" in answer.json()["message"]
    small = httpx.post(
        running.url + "/v1/traces",
        content=orjson.dumps(_json_request(*spans[:5])),
        headers={"Content-Type": "application/json"},
    )
    assert small.status_code == 200
    assert len(running.spans(kinds=ALL_KINDS, expected=5)) == 5  # none of the refused batch
