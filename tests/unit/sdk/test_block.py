"""`with keel.span(...)` and `async with keel.span(...)`."""

from __future__ import annotations

import pytest

import keel
from keel.sdk import Client
from tests.unit.sdk.collector import Collector

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def test_blocks_nest_and_carry_what_was_set(sdk: Client, collector: Collector) -> None:
    with keel.span("pipeline", kind="chain", input={"q": "why"}) as outer:
        with keel.span("embed", kind="embedding") as inner:
            inner.update(output=[0.1, 0.2], metadata={"dims": 2})
            assert keel.current_span_id() == inner.span_id
        assert keel.current_span_id() == outer.span_id
        assert keel.current_trace_id() == outer.trace_id
    assert keel.current_trace_id() is None
    assert keel.flush(5)

    pipeline, embed = collector.span("pipeline"), collector.span("embed")
    assert embed.parent == pipeline.span_id and pipeline.parent is None
    assert pipeline.span_id == outer.span_id and pipeline.trace_id == outer.trace_id
    assert pipeline.json("keel.input") == {"q": "why"}
    assert embed.json("keel.output") == [0.1, 0.2]
    assert embed.json("keel.metadata") == {"dims": 2}
    assert embed.attributes["keel.span.kind"] == "embedding"


async def test_async_blocks_record_errors_and_let_them_through(
    sdk: Client, collector: Collector
) -> None:
    error = TimeoutError("index slow")
    with pytest.raises(TimeoutError) as raised:
        async with keel.span("search", kind="retrieval"):
            raise error
    assert raised.value is error
    assert keel.flush(5)
    span = collector.span("search")
    assert span.status == {"code": 2, "message": "TimeoutError: index slow"}
    assert span.attributes["exception.type"] == "TimeoutError"


def test_a_traceparent_continues_the_callers_trace(sdk: Client, collector: Collector) -> None:
    incoming = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    with keel.span("handle request", traceparent=incoming):
        keel.update_current_span(output="done")
    with keel.span("garbage header", traceparent="not-a-traceparent"):
        pass
    assert keel.flush(5)

    handled = collector.span("handle request")
    assert handled.trace_id == CALLER_TRACE and handled.parent == CALLER_SPAN
    fresh = collector.span("garbage header")
    assert fresh.parent is None and fresh.trace_id != CALLER_TRACE
