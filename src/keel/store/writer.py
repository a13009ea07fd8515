"""The batching span writer: a bounded queue filled from the hot path, drained by one thread.

`emit` runs on the gateway's event loop, so it only appends to a deque; a full
queue counts the span as dropped and warns (at most once per
`drop_warning_interval_s`) instead of waiting. One daemon thread wakes every
`flush_interval_s`, or as soon as `batch_size` spans are waiting, converts and
sanitises them (see `keel.store.spans`) and inserts them in batches of up to
`batch_size`, one transaction each.

Failure handling, so that nothing accepted is lost silently:
- the database is unreachable or locked (OperationalError, dropped
  connection): the batch is retried `retries` times with exponential backoff;
- the batch still fails, or fails on data (constraint, overflow, bad value):
  its rows are inserted one by one, and only the rows that fail are counted as
  `rejected` and logged;
- nothing escapes the thread's loop, so one surprise never stops recording.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from keel.core.spans import Span
from keel.store.span_codec import line_to_row
from keel.store.spans import COPY_STATEMENT, MAX_ROWS_PER_INSERT, insert_statement, span_to_row

log = logging.getLogger(__name__)
T = TypeVar("T")
_BEHIND_SIZES = tuple(s for s in (64, 16, 4, 1) if s <= MAX_ROWS_PER_INSERT)

_MAX_BACKOFF_S = 5.0


class DropCounter:
    """Counts spans dropped on the hot path; warns at most once per interval, with the
    number dropped since the last warning (a full queue must not flood the log)."""

    def __init__(self, warning_interval_s: float) -> None:
        self.total = 0
        self._interval_s = warning_interval_s
        self._reported = 0
        self._last_warning = -math.inf
        self._lock = threading.Lock()

    def add(self, count: int, reason: str) -> None:
        """Count `count` dropped spans because of `reason`."""
        if count <= 0:
            return
        now = time.monotonic()
        with self._lock:
            self.total += count
            if now - self._last_warning < self._interval_s:
                return
            since_last, self._reported = self.total - self._reported, self.total
            self._last_warning = now
            total = self.total
        log.warning(
            "span writer: dropped %d spans because %s (%d dropped in total); "
            "the database is not keeping up or is down",
            since_last,
            reason,
            total,
        )


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters of a `SpanWriter`: spans waiting now, and totals since it was created."""

    queued: int
    written: int
    dropped: int
    rejected: int

    def as_dict(self) -> dict[str, int]:
        """The counters as a JSON-ready mapping."""
        return {
            "queued": self.queued,
            "written": self.written,
            "dropped": self.dropped,
            "rejected": self.rejected,
        }


class SpanWriter:
    """A `SpanSink` that stores spans in the `spans` table in the background."""

    def __init__(
        self,
        engine: Engine,
        *,
        queue_size: int = 10_000,
        batch_size: int = 256,
        flush_interval_s: float = 0.2,
        retries: int = 4,
        retry_backoff_s: float = 0.25,
        drop_warning_interval_s: float = 5.0,
        slice_rows: int = 32,
        pause_s: float = 0.0,
    ) -> None:
        """`slice_rows` and `pause_s`: work in slices of at most that many rows (converted,
        or inserted by one statement) and sleep `pause_s` between slices.

        In-process, the writer shares the GIL with the event loop, and the sleep (even 0)
        lets the loop run, so a batch never stalls a request for milliseconds. In the
        recording process it is a real pause: work done in bursts of milliseconds on a
        small machine delays the gateway's own processes (see `writer_process`). With
        a batch or more waiting, the pause is skipped so the writer keeps up.
        """
        self._engine = engine
        self._slice_rows = max(1, min(slice_rows, MAX_ROWS_PER_INSERT))
        self._chunk_sizes = tuple(s for s in (self._slice_rows, 16, 4, 1) if s <= self._slice_rows)
        self._pause_s = pause_s
        # deque.append/popleft are atomic under the GIL: the event loop appends
        # without a lock, and the thread is woken only once per full batch (a
        # queue.Queue would wake it, and hand it the GIL, on every request).
        self._spans: deque[Span] = deque()
        self._flush_requests: deque[threading.Event] = deque()
        self._wake = threading.Event()
        self._paramstyle = engine.dialect.paramstyle
        self._copy = engine.dialect.name == "postgresql"
        self._statements: dict[int, str] = {}
        self._pending = 0  # taken off the queue, not yet written
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._retries = retries
        self._retry_backoff_s = retry_backoff_s
        self._drops = DropCounter(drop_warning_interval_s)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._written = 0
        self._rejected = 0

    def emit(self, span: Span) -> None:
        """Queue `span` for writing; never blocks, never raises (a full queue drops it, counted)."""
        try:
            if self._closed:
                self._drops.add(1, "the writer is closed")
                return
            queued = len(self._spans)
            if queued >= self._queue_size:
                self._drops.add(1, f"the queue is full ({self._queue_size} spans)")
                return
            self._spans.append(span)
            if queued + 1 == self._batch_size:
                self._wake.set()
        except Exception:  # the hot path must survive anything, even a broken logger
            pass

    def room(self) -> int:
        """How many more spans the queue takes now (0 when closed)."""
        return 0 if self._closed else max(self._queue_size - len(self._spans), 0)

    def start(self) -> None:
        """Start the background thread (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="keel-span-writer", daemon=True)
            self._thread.start()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until every span queued before this call is stored; False on timeout.

        For tests and tools, not for the event loop (use `asyncio.to_thread`).
        """
        thread = self._thread
        if thread is None or not thread.is_alive():
            return not self._spans
        if self._closed:  # the thread is draining and will not take requests: wait for it
            thread.join(timeout_s)
            return not thread.is_alive()
        done = threading.Event()
        self._flush_requests.append(done)
        self._wake.set()
        return done.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write everything still queued, then stop the thread; waits at most `timeout_s`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.start()  # a writer closed before it was started still drains its queue
        self._stopping.set()
        self._wake.set()
        assert self._thread is not None
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning(
                "span writer: close timed out after %.1fs with %d spans still queued; "
                "they are written only if the process keeps running",
                timeout_s,
                len(self._spans),
            )
            return
        self._drops.add(self._discard_leftovers(), "they arrived after the writer closed")

    def stats(self) -> WriterStats:
        """Spans queued now, and how many were written, dropped and rejected so far."""
        return WriterStats(
            queued=len(self._spans) + self._pending,
            written=self._written,
            dropped=self._drops.total,
            rejected=self._rejected,
        )

    def __enter__(self) -> SpanWriter:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- hot path helpers --------------------------------------------------

    def _discard_leftovers(self) -> int:
        count = len(self._spans)
        self._spans.clear()
        while self._flush_requests:
            self._flush_requests.popleft().set()
        return count

    # -- the writer thread -------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                self._wake.wait(self._flush_interval_s)
                self._wake.clear()
                stopping = self._stopping.is_set()
                # Flush requests taken before the drain cover every span emitted before them.
                flushes = [self._flush_requests.popleft() for _ in range(len(self._flush_requests))]
                self._drain()
                for flushed in flushes:
                    flushed.set()
                if stopping and not self._spans:
                    return
            except Exception:
                log.exception("span writer: unexpected error; continuing")
                time.sleep(self._flush_interval_s)

    def _drain(self) -> None:
        """Write everything queued now, in batches of at most `batch_size`."""
        spans = self._spans
        while spans:
            batch = [spans.popleft() for _ in range(min(self._batch_size, len(spans)))]
            self._pending = len(batch)
            try:
                self._write(batch, span_to_row, self._behind)
            finally:
                self._pending = 0

    def write_lines(self, lines: Sequence[bytes], behind: Callable[[], bool]) -> None:
        """Store span lines (`keel.store.span_codec`) now, on the calling thread, with the
        same slicing, retries and counting; a line that is not a span is rejected.

        For a caller that does its own queueing (the recording process). `behind` is asked
        between slices: while it says the caller is behind, the writer skips the pauses and
        inserts in big statements.
        """
        self._write(lines, line_to_row, behind)

    def _pause(self, behind: Callable[[], bool]) -> None:
        # Under a backlog the writer works flat out: keeping up matters more than smoothing.
        if not behind():
            time.sleep(self._pause_s)
        elif self._thread is not None:
            # In-process, sleep(0) hands the GIL to the event loop. In the recording
            # process it would give up the core at every slice: a third of its time, on a
            # busy two-core machine, went to waiting for the scheduler.
            time.sleep(0)

    def _behind(self) -> bool:
        return len(self._spans) >= self._batch_size

    def _write(
        self,
        batch: Sequence[T],
        to_row: Callable[[T], tuple[Any, ...]],
        behind: Callable[[], bool],
    ) -> None:
        rows: list[tuple[Any, ...]] = []
        for index, item in enumerate(batch):
            if index % self._slice_rows == self._slice_rows - 1:
                self._pause(behind)
            try:
                rows.append(to_row(item))
            except Exception as exc:
                self._rejected += 1
                span_id = getattr(item, "span_id", None)
                what = "a span line" if span_id is None else f"span {span_id!r}"
                log.warning("span writer: rejected %s: cannot convert it: %s", what, _describe(exc))
        if rows:
            self._store(rows, behind)

    def _store(self, rows: Sequence[tuple[Any, ...]], behind: Callable[[], bool]) -> None:
        for attempt in range(self._retries + 1):
            try:
                self._insert(rows, behind)
            except DBAPIError as exc:
                if not _is_transient(exc) or attempt == self._retries:
                    break
                delay = min(self._retry_backoff_s * 2**attempt, _MAX_BACKOFF_S)
                log.warning(
                    "span writer: database unavailable (%s); retrying %d spans in %.2fs",
                    _describe(exc),
                    len(rows),
                    delay,
                )
                time.sleep(delay)
            except Exception:
                break  # a value the driver refused before sending: find the row
            else:
                self._written += len(rows)
                return
        self._write_one_by_one(rows, behind)

    def _write_one_by_one(
        self, rows: Sequence[tuple[Any, ...]], behind: Callable[[], bool]
    ) -> None:
        failures: list[tuple[str, str]] = []
        for row in rows:
            try:
                self._insert([row], behind)
            except Exception as exc:
                failures.append((str(row[0]), _describe(exc)))
            else:
                self._written += 1
        if failures:
            self._rejected += len(failures)
            shown = "; ".join(f"span {span_id}: {reason}" for span_id, reason in failures[:3])
            more = f"; and {len(failures) - 3} more" if len(failures) > 3 else ""
            log.warning(
                "span writer: rejected %d of %d spans in a batch: %s%s",
                len(failures),
                len(rows),
                shown,
                more,
            )

    def _insert(self, rows: Sequence[tuple[Any, ...]], behind: Callable[[], bool]) -> None:
        with self._engine.begin() as connection:
            if self._copy:
                self._copy_rows(connection, rows, behind)
                return
            start = 0
            while start < len(rows):
                # Only a few statement sizes: drivers cache one prepared statement per
                # distinct SQL text, and one per row count (1..256) grew RSS by tens of MB.
                sizes = _BEHIND_SIZES if behind() else self._chunk_sizes
                size = next(s for s in sizes if s <= len(rows) - start)
                chunk = rows[start : start + size]
                start += size
                statement = self._statements.get(size)
                if statement is None:
                    statement = self._statements[size] = insert_statement(self._paramstyle, size)
                connection.exec_driver_sql(statement, tuple(chain.from_iterable(chunk)))
                self._pause(behind)

    def _copy_rows(
        self, connection: Connection, rows: Sequence[tuple[Any, ...]], behind: Callable[[], bool]
    ) -> None:
        # PostgreSQL: COPY took the same rows eight times faster than multi-row INSERTs
        # through psycopg (benchmarks/tracing.py prints both).
        cursor = connection.connection.cursor()
        try:
            with cursor.copy(COPY_STATEMENT) as copy:
                for index, row in enumerate(rows):
                    copy.write_row(row)
                    if index % self._slice_rows == self._slice_rows - 1:
                        self._pause(behind)
        finally:
            cursor.close()


def _is_transient(exc: DBAPIError) -> bool:
    return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)


def _describe(exc: BaseException) -> str:
    # SQLAlchemy's message embeds the SQL and every parameter (whole prompts): keep the cause only.
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0][:300] if lines else ''}"
