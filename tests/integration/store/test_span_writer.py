"""The batching span writer on both dialects: round trip, sanitising, poison rows, back-pressure."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine

from keel.core.spans import Attempt, Span
from keel.core.usage import Usage
from keel.store.engine import create_engine_for
from keel.store.migrate import upgrade
from keel.store.spans import SpanRepository
from keel.store.writer import SpanWriter

MakeSpan = Callable[..., Span]
WRITER_LOG = "keel.store.writer"


def _full_span(make_span: MakeSpan) -> Span:
    return make_span(
        parent_span_id="00f067aa0ba902b7",
        name="chat smart",
        status="error",
        status_code=502,
        error="upstream failed: HTTP 503",
        alias="smart",
        provider="openai",
        model="gpt-4o-mini-2024-07-18",
        deployment="smart[0] openai/gpt-4o-mini@api.openai.com",
        usage=Usage(
            input_tokens=1200,
            output_tokens=340,
            cache_read_tokens=1024,
            cache_write_tokens=7,
            reasoning_tokens=128,
            estimated=True,
        ),
        cost_usd=0.000123456789,
        price={"input": 0.15, "output": 0.6, "cache_read": 0.075, "cache_write": 0.15},
        ttft_ms=87.125,
        stream=True,
        user_id="user-42",
        session_id="sess-7",
        tags=["rag", "eval", "ünïcode ✓"],
        metadata={"release": "v1.2.3", "nested": {"n": [1, 2.5, None, True]}},
        input=[{"role": "user", "content": "Bonjour 👋, 你好"}],
        output={"role": "assistant", "content": "Hi", "tool_calls": None},
        params={"temperature": 0.2, "max_tokens": 512, "stop": ["\n\n"]},
        attempts=[
            Attempt("smart[0]", "openai", "gpt-4o-mini", "HTTP 503: busy", 503, 12.3456789, 1.5),
            Attempt("smart[1]", "openai", "gpt-4o-mini", "ok", 200, 456.0001),
        ],
        attributes={"gen_ai.system": "openai", "http.route": "/v1/chat/completions"},
    )


def test_round_trip_keeps_every_field(engine: Engine, make_span: MakeSpan) -> None:
    full = _full_span(make_span)
    minimal = make_span(kind="span", name="retrieve", trace_id=full.trace_id)
    unpriced = make_span(usage=Usage(input_tokens=3), unpriced=True, cost_usd=None)
    with SpanWriter(engine, flush_interval_s=0.05) as writer:
        for span in (full, minimal, unpriced):
            writer.emit(span)
    assert writer.stats().as_dict() == {"queued": 0, "written": 3, "dropped": 0, "rejected": 0}

    repo = SpanRepository(engine)
    assert repo.get(full.span_id) == full
    assert repo.get(minimal.span_id) == minimal
    stored = repo.get(unpriced.span_id)
    assert stored == unpriced
    assert stored is not None and stored.cost_usd is None and stored.unpriced
    assert repo.get("ffffffffffffffff") is None


def test_nul_and_lone_surrogates_are_stored_safely(engine: Engine, make_span: MakeSpan) -> None:
    dirty = make_span(
        name="chat\x00fast",
        error="bad byte \x00 and half a pair \ud83d",
        user_id="u\x00",
        tags=["t\x00", "\udc00"],
        metadata={"k\x00ey": "v\x00", "deep": [{"x": "\ud800\x00"}]},
        input=[{"role": "user", "content": "a\x00b \udfff c 😀"}],
        output="\x00\x00",
        params={"stop": ["\x00"]},
        attributes={"split pair": "\ud83d\ude00", 7: b"\xffraw", "big": 10**30},
    )
    with SpanWriter(engine, flush_interval_s=0.05) as writer:
        writer.emit(dirty)
    assert writer.stats().rejected == 0

    stored = SpanRepository(engine).get(dirty.span_id)
    assert stored is not None
    assert stored.name == "chat␀fast"
    assert stored.error == "bad byte ␀ and half a pair \ufffd"
    assert stored.user_id == "u␀"
    assert stored.tags == ["t␀", "\ufffd"]
    assert stored.metadata == {"k␀ey": "v␀", "deep": [{"x": "\ufffd␀"}]}
    assert stored.input == [{"role": "user", "content": "a␀b \ufffd c 😀"}]
    assert stored.output == "␀␀"
    assert stored.params == {"stop": ["␀"]}
    assert stored.attributes == {"split pair": "😀", "7": "\ufffdraw", "big": str(10**30)}


def test_a_poison_row_loses_only_itself(
    engine: Engine, make_span: MakeSpan, caplog: pytest.LogCaptureFixture
) -> None:
    good = [make_span() for _ in range(5)]
    duplicate = make_span(span_id=good[2].span_id, name="same span id twice")
    # A buggy upstream reporting 10^20 tokens: out of BIGINT range on both dialects.
    overflow = make_span(usage=Usage(input_tokens=10**20))
    writer = SpanWriter(engine, batch_size=100, flush_interval_s=0.05)
    for span in [*good[:3], duplicate, overflow, *good[3:]]:
        writer.emit(span)  # queued before start: all seven land in one batch
    with caplog.at_level(logging.WARNING, logger=WRITER_LOG):
        writer.start()
        assert writer.flush(10)
        writer.emit(make_span(name="after"))  # the thread is still alive and writing
        writer.close()

    assert writer.stats().as_dict() == {"queued": 0, "written": 6, "dropped": 0, "rejected": 2}
    repo = SpanRepository(engine)
    assert all(repo.get(span.span_id) == span for span in good)
    assert repo.get(overflow.span_id) is None
    assert "rejected 2 of 7 spans" in caplog.text
    assert "SELECT" not in caplog.text and "INSERT" not in caplog.text  # no SQL or payload dumps


def test_full_queue_drops_counts_and_warns_without_blocking(
    engine: Engine, make_span: MakeSpan, caplog: pytest.LogCaptureFixture
) -> None:
    writer = SpanWriter(engine, queue_size=10)  # not started: nothing drains the queue
    spans = [make_span() for _ in range(1000)]
    with caplog.at_level(logging.WARNING, logger=WRITER_LOG):
        began = time.perf_counter()
        for span in spans:
            writer.emit(span)
        elapsed = time.perf_counter() - began
    assert elapsed < 0.5
    assert writer.stats().as_dict() == {"queued": 10, "written": 0, "dropped": 990, "rejected": 0}
    warnings = [r for r in caplog.records if r.name == WRITER_LOG]
    assert len(warnings) == 1  # rate-limited: one warning per interval, not one per span
    assert "queue is full (10 spans)" in warnings[0].getMessage()

    writer.close()
    assert writer.stats().written == 10
    assert len(SpanRepository(engine).list_calls(since=0, limit=2000)) == 10


def test_close_drains_everything_without_waiting_for_the_timer(
    engine: Engine, make_span: MakeSpan
) -> None:
    writer = SpanWriter(engine, batch_size=64, flush_interval_s=30.0)
    writer.start()
    for _ in range(1500):
        writer.emit(make_span())
    began = time.perf_counter()
    writer.close()
    assert time.perf_counter() - began < 5
    assert writer.stats().as_dict() == {"queued": 0, "written": 1500, "dropped": 0, "rejected": 0}
    assert len(SpanRepository(engine).list_calls(since=0, limit=5000)) == 1500

    writer.emit(make_span())  # after close: counted as dropped, never raised
    assert writer.stats().dropped == 1


def test_a_lone_span_is_written_after_the_flush_interval(
    engine: Engine, make_span: MakeSpan
) -> None:
    span = make_span()
    repo = SpanRepository(engine)
    with SpanWriter(engine, flush_interval_s=0.05) as writer:
        writer.emit(span)
        deadline = time.monotonic() + 5
        while repo.get(span.span_id) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert repo.get(span.span_id) == span
        assert writer.stats().queued == 0


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_database_briefly_down_is_retried(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    make_span: MakeSpan,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # SQLite: the file exists but the table does not yet (OperationalError);
    # PostgreSQL: the database itself does not exist yet (connection refused).
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'late.db'}"
        server = None
    else:
        server = request.getfixturevalue("postgres_server")
        url = server.new_database_url()
    engine = create_engine_for(url)
    writer = SpanWriter(engine, flush_interval_s=0.02, retries=12, retry_backoff_s=0.02)
    spans = [make_span() for _ in range(3)]
    try:
        with caplog.at_level(logging.WARNING, logger=WRITER_LOG):
            for span in spans:
                writer.emit(span)
            writer.start()
            deadline = time.monotonic() + 5
            while "database unavailable" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.01)
            assert "database unavailable" in caplog.text
            if server is None:
                upgrade(url)
            else:
                # The database comes back whole: migrated aside, then renamed into place.
                staging = server.create_database()
                upgrade(staging)
                server.rename_database(staging, url)
            assert writer.flush(15)
        assert writer.stats().as_dict() == {"queued": 0, "written": 3, "dropped": 0, "rejected": 0}
        assert [SpanRepository(engine).get(s.span_id) for s in spans] == spans
    finally:
        writer.close()
        engine.dispose()
        if server is not None:
            server.drop_database(url)
