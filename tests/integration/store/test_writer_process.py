"""Recording through the child process, both dialects: delivery, drain, crashes on either side."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from keel.core.spans import Span
from keel.store.spans import SpanRepository
from keel.store.writer_process import ProcessSpanWriter

MakeSpan = Callable[..., Span]
LOG = "keel.store.writer_process"


def _stored(engine: Engine, spans: list[Span]) -> list[Span | None]:
    repository = SpanRepository(engine)
    return [repository.get(span.span_id) for span in spans]


def _wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_spans_arrive_equal_and_flush_waits_for_them(
    db_url: str, engine: Engine, make_span: MakeSpan
) -> None:
    spans = [make_span(name=f"call {i}", metadata={"i": i}) for i in range(300)]
    writer = ProcessSpanWriter(db_url, flush_interval_s=0.05)
    writer.start()
    try:
        for span in spans:
            writer.emit(span)
        assert writer.flush(timeout_s=30)
        assert writer.stats().as_dict() == {
            "queued": 0,
            "written": 300,
            "dropped": 0,
            "rejected": 0,
        }
        assert _stored(engine, spans) == spans
    finally:
        writer.close()


def test_a_backlog_lands_whole_and_a_poison_span_loses_only_itself(
    db_url: str, engine: Engine, make_span: MakeSpan
) -> None:
    # Thousands at once put the recording process behind: it gathers bigger transactions
    # (and on PostgreSQL copies them); a duplicate span id fails its batch, which is then
    # written row by row.
    spans = [make_span(name=f"burst {i}") for i in range(3000)]
    duplicate = make_span(span_id=spans[10].span_id, name="same span id twice")
    writer = ProcessSpanWriter(db_url, flush_interval_s=0.05)
    writer.start()
    try:
        for span in [*spans[:2000], duplicate, *spans[2000:]]:
            writer.emit(span)
        assert writer.flush(timeout_s=60)
        assert writer.stats().as_dict() == {
            "queued": 0,
            "written": 3000,
            "dropped": 0,
            "rejected": 1,
        }
        assert _stored(engine, spans) == spans
    finally:
        writer.close()


def test_text_no_database_accepts_is_stored_sanitised(
    db_url: str, engine: Engine, make_span: MakeSpan
) -> None:
    span = make_span(
        user_id="nul\x00user",
        input=[{"role": "user", "content": "half a pair \ud83d and a NUL \x00"}],
        metadata={"\udcff key": "value"},
    )
    writer = ProcessSpanWriter(db_url, flush_interval_s=0.05)
    writer.start()
    writer.emit(span)
    writer.close(timeout_s=30)
    assert writer.stats().written == 1
    (stored,) = _stored(engine, [span])
    assert stored is not None
    assert stored.user_id == "nul\u2400user"
    assert stored.input == [{"role": "user", "content": "half a pair \ufffd and a NUL \u2400"}]
    assert stored.metadata == {"\ufffd key": "value"}


def test_close_delivers_everything_still_queued(
    db_url: str, engine: Engine, make_span: MakeSpan
) -> None:
    writer = ProcessSpanWriter(db_url, flush_interval_s=5.0, send_interval_s=5.0)
    writer.start()
    spans = [make_span() for _ in range(1000)]
    for span in spans:
        writer.emit(span)
    writer.close(timeout_s=30)
    assert writer.stats().as_dict() == {"queued": 0, "written": 1000, "dropped": 0, "rejected": 0}
    assert all(_stored(engine, spans))
    writer.emit(make_span())  # after close: refused and counted, never raised
    assert writer.stats().dropped == 1


def test_a_full_queue_drops_and_counts_instead_of_waiting(
    db_url: str, make_span: MakeSpan, caplog: pytest.LogCaptureFixture
) -> None:
    writer = ProcessSpanWriter(db_url, queue_size=10)  # not started: nothing drains
    started = time.perf_counter()
    for _ in range(25):
        writer.emit(make_span())
    assert time.perf_counter() - started < 0.5
    assert writer.stats().as_dict() == {"queued": 10, "written": 0, "dropped": 15, "rejected": 0}
    assert "queue is full (10 spans)" in caplog.text
    writer.close(timeout_s=30)
    assert writer.stats().as_dict() == {"queued": 0, "written": 10, "dropped": 15, "rejected": 0}


def test_a_killed_recording_process_is_replaced_and_its_losses_counted(
    db_url: str, engine: Engine, make_span: MakeSpan, caplog: pytest.LogCaptureFixture
) -> None:
    writer = ProcessSpanWriter(db_url, flush_interval_s=0.05, restart_backoff_s=0.1)
    writer.start()
    try:
        first = [make_span() for _ in range(50)]
        for span in first:
            writer.emit(span)
        assert writer.flush(timeout_s=30)
        child = writer._child
        assert child is not None
        # Stop it, queue spans it will never read, then kill it.
        os.kill(child.process.pid, signal.SIGSTOP)
        doomed = [make_span() for _ in range(20)]
        for span in doomed:
            writer.emit(span)
        _wait_for(lambda: child.sent == 70)
        os.kill(child.process.pid, signal.SIGKILL)
        _wait_for(lambda: child.exited)  # spans sent while it dies would be lost too

        later = [make_span() for _ in range(30)]
        for span in later:
            writer.emit(span)
        assert writer.flush(timeout_s=30)
        assert writer._child is not child
        assert writer.stats().as_dict() == {
            "queued": 0,
            "written": 80,
            "dropped": 20,
            "rejected": 0,
        }
        assert all(_stored(engine, first + later))
        assert _stored(engine, doomed) == [None] * 20
        assert "exited with status -9; 20 spans it had not stored" in caplog.text
    finally:
        writer.close()


_GATEWAY_THAT_DIES = """
import os, sys, time
from keel.core.spans import Span
from keel.store.writer_process import ProcessSpanWriter

writer = ProcessSpanWriter(sys.argv[1], flush_interval_s=60.0)
writer.start()
for i in range(int(sys.argv[2])):
    now = time.time()
    writer.emit(Span(trace_id="%032x" % (i + 1), span_id=f"{i + 1:016x}", name="chat",
                     kind="generation", start_time=now, end_time=now))
while writer._child is None or writer._child.sent < int(sys.argv[2]):
    time.sleep(0.01)
os.kill(os.getpid(), 9)  # a gateway crash: no close, no flush
"""


def test_spans_already_sent_survive_a_gateway_crash(db_url: str, engine: Engine) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_GATEWAY_THAT_DIES), db_url, "40"],
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL
    # The orphaned child sees end-of-file, stores what it holds and exits on its own.
    repository = SpanRepository(engine)
    _wait_for(lambda: repository.get(f"{40:016x}") is not None)
    assert all(repository.get(f"{i + 1:016x}") is not None for i in range(40))


def test_a_line_that_is_not_a_span_is_rejected_and_the_rest_stored(
    db_url: str, engine: Engine, make_span: MakeSpan
) -> None:
    from keel.store.span_codec import encode_span

    spans = [make_span(name=f"ok {i}") for i in range(3)]
    lines = [encode_span(spans[0]), b"not json\n", b"[1, 2]\n", *map(encode_span, spans[1:])]
    done = subprocess.run(
        [sys.executable, "-m", "keel.store.writer_process"],
        input=b"".join(lines),
        capture_output=True,
        env={**os.environ, "KEEL_DATABASE_URL": db_url},
        timeout=60,
        check=True,
    )
    # the last report: nothing queued, 3 written, 0 dropped, 2 rejected
    assert done.stdout.splitlines()[-1] == b"stats 0 3 0 2"
    assert _stored(engine, spans) == spans
    assert b"rejected a span line: cannot convert it: ValueError" in done.stderr
