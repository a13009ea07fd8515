"""Sampling: decided per trace at the root, followed by children, an incoming flag wins."""

from __future__ import annotations

import keel
import keel.sdk
from tests.unit.sdk.collector import Collector
from tests.unit.sdk.conftest import Configure

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@keel.observe
def leaf() -> dict[str, str]:
    return keel.trace_headers()


@keel.observe
def root() -> list[dict[str, str]]:
    with keel.span("middle"):
        return [leaf(), leaf()]


def test_rate_zero_exports_nothing_yet_propagates_unsampled(
    configure: Configure, collector: Collector
) -> None:
    configure(sample_rate=0.0)
    for _ in range(20):
        headers = root()
    assert keel.flush(5)
    assert collector.received == []
    assert keel.sdk.stats().spans_exported == 0
    traceparent = headers[0]["traceparent"]
    assert traceparent.startswith("00-") and traceparent.endswith("-00")
    assert headers[0] == headers[1]  # no span objects below an unsampled root


def test_rate_one_exports_everything(configure: Configure, collector: Collector) -> None:
    configure(sample_rate=1.0)
    for _ in range(20):
        root()
    assert keel.flush(5)
    assert len(collector.spans()) == 80
    assert keel.sdk.stats().spans_exported == 80


def test_children_follow_the_roots_decision(configure: Configure, collector: Collector) -> None:
    configure(sample_rate=0.5)
    for _ in range(200):
        root()
    assert keel.flush(5)
    traces: dict[str, list[str]] = {}
    for span in collector.spans():
        traces.setdefault(span.trace_id, []).append(span.name)
    assert 0 < len(traces) < 200
    assert all(sorted(names) == ["leaf", "leaf", "middle", "root"] for names in traces.values())


def test_an_incoming_sampled_flag_wins_over_the_rate(
    configure: Configure, collector: Collector
) -> None:
    configure(sample_rate=0.0)
    with keel.span("handler", traceparent=f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"):
        leaf()
    assert keel.flush(5)
    assert {s.trace_id for s in collector.spans()} == {CALLER_TRACE}
    assert collector.span("handler").parent == CALLER_SPAN

    configure(sample_rate=1.0)
    with keel.span("handler", traceparent=f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"):
        headers = leaf()
    assert keel.flush(5)
    assert len(collector.spans()) == 2  # nothing new
    assert headers == {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"}
