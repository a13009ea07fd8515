"""The background exporter: flush, batches, the bounded queue, retries, a server that is down."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

import keel
import keel.sdk
from keel import __version__
from keel.sdk.otlp import SCOPE_VERSION
from tests.unit.sdk.collector import Collector
from tests.unit.sdk.conftest import Configure


@keel.observe(kind="tool")
def work(i: Any) -> Any:
    return i


def test_spans_wait_in_the_background_until_flushed(
    configure: Configure, collector: Collector
) -> None:
    configure(api_key="keel-secret")  # the flush interval is a minute
    for i in range(5):
        work(i)
    time.sleep(0.05)
    assert collector.received == []
    assert keel.sdk.stats().spans_queued == 5

    assert keel.flush(timeout_s=5) is True
    (request,) = collector.trace_requests()
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == "Bearer keel-secret"
    scope = request.body["resourceSpans"][0]["scopeSpans"][0]["scope"]
    assert scope == {"name": "keel.sdk", "version": "0.1.0"}
    assert [s.json("keel.input") for s in collector.spans()] == [{"i": i} for i in range(5)]
    assert keel.sdk.stats().spans_exported == 5 and keel.sdk.stats().spans_queued == 0


def test_the_flush_interval_sends_without_a_flush(
    configure: Configure, collector: Collector
) -> None:
    configure(flush_interval_s=0.02)
    work(1)
    deadline = time.monotonic() + 5
    while not collector.spans() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [s.name for s in collector.spans()] == ["work"]


def test_batches_are_cut_by_count_and_by_bytes(configure: Configure, collector: Collector) -> None:
    configure(max_batch=3)
    for i in range(7):
        work(i)
    assert keel.flush(5)
    sizes = [
        len(r.body["resourceSpans"][0]["scopeSpans"][0]["spans"])
        for r in collector.trace_requests()
    ]
    assert sum(sizes) == 7 and max(sizes) <= 3

    configure(max_batch_bytes=2048)
    for _ in range(6):
        work(500 * "x")  # ~1.2 kB per span (input and output)
    assert keel.flush(5)
    bodies = collector.trace_requests()[len(sizes) :]
    assert len(bodies) >= 3
    assert all(len(r.raw) <= 2048 for r in bodies)
    assert sum(len(r.body["resourceSpans"][0]["scopeSpans"][0]["spans"]) for r in bodies) == 6


def test_a_full_queue_drops_new_spans_and_counts_them(
    configure: Configure, collector: Collector
) -> None:
    configure(max_queue=10, max_batch=1000)
    for i in range(25):
        work(i)
    stats = keel.sdk.stats()
    assert (stats.spans_queued, stats.spans_dropped) == (10, 15)
    assert keel.flush(5)
    assert [s.json("keel.input")["i"] for s in collector.spans()] == list(range(10))
    assert keel.sdk.stats().spans_exported == 10


@pytest.mark.parametrize("status", [503, 429, 502])
def test_a_busy_server_is_retried_until_it_accepts(
    configure: Configure, collector: Collector, status: int
) -> None:
    configure(max_retries=3)
    collector.statuses.extend([status, status])
    work(1)
    assert keel.flush(5)
    first, second, third = collector.trace_requests()
    assert first.raw == second.raw == third.raw
    stats = keel.sdk.stats()
    assert (stats.spans_exported, stats.spans_failed, stats.retries) == (1, 0, 2)


def test_a_refused_batch_is_dropped_at_once_with_a_warning(
    configure: Configure, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    configure()
    collector.statuses.append(401)
    with caplog.at_level(logging.WARNING, logger="keel.sdk"):
        work(1)
        assert keel.flush(5)
    assert len(collector.trace_requests()) == 1
    assert keel.sdk.stats().spans_failed == 1
    assert "refused 1 spans with HTTP 401 (check KEEL_API_KEY)" in caplog.text


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_server_that_is_down_costs_the_application_nothing_but_a_warning(
    configure: Configure, caplog: pytest.LogCaptureFixture
) -> None:
    configure(host=f"http://127.0.0.1:{_closed_port()}", max_batch=100, max_retries=2)

    @keel.observe
    def handler(i: int) -> Any:
        return work(i)

    with caplog.at_level(logging.WARNING, logger="keel.sdk"):
        started = time.perf_counter()
        assert [handler(i) for i in range(1000)] == list(range(1000))
        elapsed = time.perf_counter() - started
        assert keel.flush(10)
    assert elapsed < 0.5  # ~20 µs a call; the exporter thread does the failing
    stats = keel.sdk.stats()
    assert stats.spans_failed == 2000 and stats.spans_exported == 0
    failures = [r for r in caplog.records if "could not send" in r.getMessage()]
    assert len(failures) == 1  # rate-limited, though ~20 batches failed
    assert "after 3 attempt(s)" in failures[0].getMessage()
    started = time.perf_counter()
    assert keel.shutdown() is True
    assert time.perf_counter() - started < 1.0


def test_spans_left_at_exit_are_sent(collector: Collector) -> None:
    script = textwrap.dedent(
        f"""
        import keel

        keel.configure(host="{collector.url}", flush_interval_s=60)

        @keel.observe
        def last_words() -> str:
            return "bye"

        last_words()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    assert [s.name for s in collector.spans()] == ["last_words"]


def test_the_scope_version_is_the_package_version() -> None:
    assert __version__ == SCOPE_VERSION
