"""Two services, one tree: an app instrumented with `keel.observe` calls the gateway."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import keel.sdk as sdk
from keel.tracing.semconv import SPAN_KINDS
from tests.e2e.conftest import RunningKeel

ALL_KINDS = tuple(SPAN_KINDS)


@pytest.fixture
def app_sdk(keel: RunningKeel) -> Iterator[None]:
    sdk.configure(host=keel.url, flush_interval_s=60.0, release="2.0.1", environment="test")
    yield
    sdk.shutdown(2.0)


def test_sdk_spans_and_the_gateway_span_land_in_one_tree(keel: RunningKeel, app_sdk: None) -> None:
    client = sdk.openai_client(base_url=keel.url + "/v1", api_key="unused", max_retries=0)

    @sdk.observe(kind="retrieval")
    def retrieve(question: str) -> list[str]:
        return ["Keel is an LLMOps platform."]

    @sdk.observe(name="answer question", kind="chain")
    def answer(question: str) -> str:
        sdk.update_current_trace(user_id="ann", session_id="conv-9", tags=["docs"])
        context = retrieve(question)
        reply = client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": f"{context[0]} {question}"}]
        )
        return reply.choices[0].message.content or ""

    assert answer("What is Keel?").startswith("Echo:")
    assert sdk.flush(timeout_s=10)

    spans = {s.name: s for s in keel.spans(kinds=ALL_KINDS, expected=3)}
    root, search, gateway = spans["answer question"], spans["retrieve"], spans["chat.completions"]
    assert root.trace_id == search.trace_id == gateway.trace_id
    assert root.parent_span_id is None
    assert search.parent_span_id == gateway.parent_span_id == root.span_id
    assert (root.kind, search.kind, gateway.kind) == ("chain", "retrieval", "generation")
    assert root.input == {"question": "What is Keel?"}
    assert root.output == gateway.output[0]["message"]["content"]
    assert search.output == ["Keel is an LLMOps platform."]
    assert (root.user_id, root.session_id, root.tags) == ("ann", "conv-9", ["docs"])
    assert root.attributes["keel.release"] == "2.0.1"
    assert gateway.cost_usd is not None and gateway.usage is not None
