"""Recording in a process of its own: the gateway's event loop only encodes spans.

`ProcessSpanWriter` is the span sink `keel serve` uses by default. `emit` encodes a span
(one orjson call, `keel.store.span_codec`) and appends the line to a bounded deque; a
feeder thread sends whatever has queued, every `send_interval_s`, through a pipe to a child
process (`python -m keel.store.writer_process`) that stores it with the batching
`SpanWriter`. Converting rows, binding parameters, SQLite's page and index updates and
PostgreSQL round trips all happen there, on another core and under another GIL, so they
never stall a request. An in-process writer thread cost the gateway several times more CPU
per request, most of it in GIL hand-offs, and its batches showed as millisecond stalls in
the p99 latency (`benchmarks/gateway.py`).

The pipe protocol, one line per message:
- parent to child (stdin): span lines; `#flush N` asks for everything sent so far to be
  stored, and is answered with `flushed N ...`;
- child to parent (stdout): `stats Q W D R` (queued, written, dropped, rejected since the
  child started) whenever they change, and `flushed N Q W D R`.

Nothing accepted is lost silently: the parent counts what it sent to each child, so spans
a crashed child never reported are counted as dropped (and logged, with its exit status);
a new child starts after a backoff while spans keep queueing (a full queue drops and
counts). On `close` the child gets end-of-file, drains its queue and exits; it also does
so when the gateway process dies, so a gateway crash loses no span already sent. The child
ignores Ctrl-C and runs in its own session: only the end of its input stops it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import orjson

from keel.core.spans import Span
from keel.store.engine import create_engine_for
from keel.store.span_codec import encode_span
from keel.store.writer import DropCounter, SpanWriter, WriterStats

log = logging.getLogger(__name__)

_MAX_RESTART_BACKOFF_S = 30.0
_CONFIG_ENV = "KEEL_WRITER_CONFIG"
# The child works in slices of a few rows with short sleeps between them. Measured on a
# 2-core machine: the same CPU time spent in bursts of ~2 ms every 20 ms raised a bare
# proxy's p99 at concurrency 1 from +0.3 to +1.9 ms (a woken request had to wait behind
# the burst); in slices of ~0.2 ms it did not move it. With a batch or more waiting it
# skips the sleeps: under sustained load, keeping up (and dropping nothing) comes first.
_SLICE_ROWS = 4
_PAUSE_S = 100e-6
_READ_SIZE = 1 << 20
_BEHIND_BATCHES = 4  # batches in one transaction when behind
_LOAD_WINDOW_S = 0.5
_BEHIND_LOAD = 0.8
_BEHIND_RATE = 5_000.0  # spans a second; the gateway at concurrency 1 sends about 3,000
_ZERO = WriterStats(0, 0, 0, 0)


@dataclass(eq=False)
class _Flush:
    id: int
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


@dataclass(eq=False)
class _Child:
    """One incarnation of the child process and what it was sent and reported."""

    process: subprocess.Popen[bytes]
    started: float
    sent: int = 0  # spans written into its pipe (the feeder thread's count)
    stats: WriterStats = _ZERO  # its latest report
    flushes: dict[int, _Flush] = field(default_factory=dict)
    reader: threading.Thread | None = None
    exited: bool = False


class ProcessSpanWriter:
    """A `SpanSink` storing spans through a child process; same API as `SpanWriter`."""

    def __init__(
        self,
        database_url: str,
        *,
        queue_size: int = 10_000,
        batch_size: int = 256,
        flush_interval_s: float = 0.2,
        send_interval_s: float = 0.02,
        restart_backoff_s: float = 1.0,
        drop_warning_interval_s: float = 5.0,
    ) -> None:
        self._database_url = database_url
        self._child_config = orjson.dumps(
            {
                "queue_size": queue_size,
                "batch_size": batch_size,
                "flush_interval_s": flush_interval_s,
            }
        ).decode()
        self._queue_size = queue_size
        self._send_interval_s = send_interval_s
        self._restart_backoff_s = restart_backoff_s
        self._refused = DropCounter(drop_warning_interval_s)  # full queue, closed writer
        self._lines: deque[bytes] = deque()
        self._flush_requests: deque[_Flush] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._closed = False
        self._feeder: threading.Thread | None = None
        self._child: _Child | None = None
        self._next_flush_id = 0
        self._accepted = 0  # queued by emit
        self._unencodable = 0  # rejected before queueing
        self._lost = 0  # sent to a child that exited without reporting them
        self._retired = _ZERO  # totals of children that exited

    # -- the gateway's side ----------------------------------------------------------------

    def emit(self, span: Span) -> None:
        """Queue `span`; never blocks, never raises (a full queue drops it, counted)."""
        try:
            if self._closed:
                self._refused.add(1, "the writer is closed")
                return
            if len(self._lines) >= self._queue_size:
                self._refused.add(1, f"the queue is full ({self._queue_size} spans)")
                return
            try:
                line = encode_span(span)
            except Exception as exc:
                self._unencodable += 1
                log.warning("span writer: rejected span %r: %s", span.span_id, exc)
                return
            self._lines.append(line)
            self._accepted += 1
        except Exception:  # the hot path must survive anything, even a broken logger
            pass

    def room(self) -> int:
        """How many more spans fit now, in this queue and the child's (0 when closed)."""
        if self._closed:
            return 0
        return max(self._queue_size - len(self._lines) - self.stats().queued, 0)

    def start(self) -> None:
        """Start the feeder thread, which starts the child process (idempotent)."""
        with self._lock:
            if self._feeder is not None:
                return
            self._feeder = threading.Thread(target=self._feed, name="keel-span-feeder", daemon=True)
            self._feeder.start()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until every span queued before this call is stored; False on timeout.

        For tests and tools, not for the event loop (use `asyncio.to_thread`).
        """
        feeder = self._feeder
        if feeder is None or not feeder.is_alive():
            return not self._lines
        with self._lock:
            self._next_flush_id += 1
            request = _Flush(self._next_flush_id)
            self._flush_requests.append(request)
        self._wake.set()
        return request.done.wait(timeout_s) and request.ok

    def close(self, timeout_s: float = 10.0) -> None:
        """Send everything queued, let the child store it and exit; waits at most `timeout_s`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.start()  # a writer closed before it was started still delivers its queue
        self._closing.set()
        self._wake.set()
        assert self._feeder is not None
        self._feeder.join(timeout_s)
        if self._feeder.is_alive():
            child = self._child
            log.warning(
                "span writer: close timed out after %.1fs with %d spans still queued; "
                "stopping the recording process",
                timeout_s,
                self.stats().queued,
            )
            if child is not None:
                child.process.kill()

    def stats(self) -> WriterStats:
        """Spans queued now (here and in the child), and totals written, dropped, rejected."""
        with self._lock:
            child = self._child.stats if self._child is not None else _ZERO
            retired, lost = self._retired, self._lost
        written = retired.written + child.written
        child_dropped = retired.dropped + child.dropped
        child_rejected = retired.rejected + child.rejected
        queued = self._accepted - written - child_dropped - child_rejected - lost
        return WriterStats(
            queued=max(queued, 0),
            written=written,
            dropped=self._refused.total + lost + child_dropped,
            rejected=self._unencodable + child_rejected,
        )

    # -- the feeder thread -----------------------------------------------------------------

    def _feed(self) -> None:
        backoff = self._restart_backoff_s
        next_start = 0.0
        while True:
            self._wake.wait(self._send_interval_s)
            self._wake.clear()
            closing = self._closing.is_set()
            child = self._child
            if child is not None and child.exited:
                self._retire(child)
                child = None
            if child is None:
                if closing and not self._lines:
                    self._answer_flushes()
                    return
                if time.monotonic() < next_start:
                    continue
                child = self._spawn()
                if child is None:
                    next_start = time.monotonic() + backoff
                    backoff = min(backoff * 2, _MAX_RESTART_BACKOFF_S)
                    continue
            if not self._send(child):
                next_start = time.monotonic() + backoff
                backoff = min(backoff * 2, _MAX_RESTART_BACKOFF_S)
                continue  # it died mid-write: retired on the next round, then restarted
            if time.monotonic() - child.started > 10:
                backoff = self._restart_backoff_s  # it lived: a later crash starts over
            if closing and not self._lines:
                self._finish(child)
                self._answer_flushes()
                return

    def _spawn(self) -> _Child | None:
        env = {**os.environ, "KEEL_DATABASE_URL": self._database_url}
        env[_CONFIG_ENV] = self._child_config
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "keel.store.writer_process"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                start_new_session=True,  # Ctrl-C in the terminal must not kill it mid-drain
            )
        except OSError as exc:
            log.error("span writer: cannot start the recording process: %s", exc)
            return None
        child = _Child(process, time.monotonic())
        child.reader = threading.Thread(
            target=self._read, args=(child,), name="keel-span-reports", daemon=True
        )
        child.reader.start()
        with self._lock:
            self._child = child
        return child

    def _send(self, child: _Child) -> bool:
        """Send the queued lines and pending flush requests; False if the child is gone.

        Lines the pipe refused go back to the front of the queue for the next child, so
        only spans that reached a child that then died unreported are ever lost.
        """
        with self._lock:
            flushes = list(self._flush_requests)
            self._flush_requests.clear()
        count = len(self._lines)  # taken after the flush requests: they cover these lines
        lines = [self._lines.popleft() for _ in range(count)]
        lines.extend(b"#flush %d\n" % request.id for request in flushes)
        if not lines:
            return True
        data = memoryview(b"".join(lines))
        assert child.process.stdin is not None
        fd = child.process.stdin.fileno()
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError:
            delivered = min(data[:written].tobytes().count(b"\n"), count)
            child.sent += delivered
            self._lines.extendleft(reversed(lines[delivered:count]))
            flushes_sent = max(data[:written].tobytes().count(b"\n") - count, 0)
            for request in flushes[:flushes_sent]:
                child.flushes[request.id] = request
            with self._lock:
                self._flush_requests.extendleft(reversed(flushes[flushes_sent:]))
            child.exited = True
            self._wake.set()
            return False
        child.sent += count
        for request in flushes:
            child.flushes[request.id] = request
        return True

    def _finish(self, child: _Child) -> None:
        """Close the child's input so it drains and exits; wait for its last report."""
        stdin = child.process.stdin
        assert stdin is not None
        with contextlib.suppress(OSError):
            stdin.close()
        child.process.wait()
        if child.reader is not None:
            child.reader.join()
        self._retire(child)

    def _retire(self, child: _Child) -> None:
        """Account for an exited child: what it never reported stored is lost."""
        code = child.process.wait()
        if child.reader is not None:
            child.reader.join(5.0)
        stats = child.stats
        lost = child.sent - stats.written - stats.dropped - stats.rejected
        with self._lock:
            self._retired = WriterStats(
                0,
                self._retired.written + stats.written,
                self._retired.dropped + stats.dropped,
                self._retired.rejected + stats.rejected,
            )
            self._lost += max(lost, 0)
            self._child = None
        with self._lock:  # the next child answers them; what was lost is counted above
            self._flush_requests.extendleft(sorted(child.flushes.values(), key=lambda f: -f.id))
        if lost > 0 or (code != 0 and not self._closing.is_set()):
            log.error(
                "span writer: the recording process exited with status %s; %d spans it had "
                "not stored are counted as dropped; starting a new one",
                code,
                max(lost, 0),
            )

    def _answer_flushes(self) -> None:
        """Closing with nothing left to send and no child: nothing a flush could wait for."""
        with self._lock:
            requests = list(self._flush_requests)
            self._flush_requests.clear()
        for request in requests:
            request.ok = True
            request.done.set()

    # -- the report reader thread (one per child) ------------------------------------------

    def _read(self, child: _Child) -> None:
        stdout = child.process.stdout
        assert stdout is not None
        for line in stdout:
            parts = line.split()
            try:
                if parts[0] == b"stats" and len(parts) == 5:
                    stats = WriterStats(*(int(p) for p in parts[1:]))
                    with self._lock:
                        child.stats = stats
                elif parts[0] == b"flushed" and len(parts) == 6:
                    stats = WriterStats(*(int(p) for p in parts[2:]))
                    with self._lock:
                        child.stats = stats
                    request = child.flushes.pop(int(parts[1]), None)
                    if request is not None:
                        request.ok = True
                        request.done.set()
            except (IndexError, ValueError):
                log.warning("span writer: unexpected report from the recording process: %r", line)
        child.exited = True
        self._wake.set()


# -- the child process ---------------------------------------------------------------------


def child_main(stdin: int, stdout: IO[bytes]) -> int:
    """Store the spans arriving on file descriptor `stdin` until end of file; report on `stdout`.

    One thread: read what the pipe holds, decode it, write a batch when `batch_size` spans
    are pending or `flush_interval_s` passed, report. (A reader thread beside a writer
    thread cost three times the CPU per span, most of it in GIL hand-offs.)
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=os.environ.get("KEEL_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = orjson.loads(os.environ.get(_CONFIG_ENV, "{}"))
    batch_size = int(config.get("batch_size", 256))
    flush_interval_s = float(config.get("flush_interval_s", 0.2))
    writer = SpanWriter(
        create_engine_for(os.environ["KEEL_DATABASE_URL"]),
        slice_rows=_SLICE_ROWS,
        pause_s=_PAUSE_S,
        batch_size=batch_size,
    )
    pending: list[bytes] = []
    partial = b""
    oldest = 0.0  # when the oldest pending span arrived

    def report(prefix: bytes = b"stats") -> None:
        stats = writer.stats()
        stdout.write(
            b"%b %d %d %d %d\n"
            % (prefix, len(pending), stats.written, stats.dropped, stats.rejected)
        )
        stdout.flush()

    load = _Load()

    def write(behind: Callable[[], bool]) -> None:
        nonlocal pending
        lines, pending = pending, []
        writer.write_lines(lines, behind)
        report()

    while True:
        wait = max(oldest + flush_interval_s - time.monotonic(), 0) if pending else None
        started = time.monotonic()
        readable, _, _ = select.select([stdin], [], [], wait)
        load.waited(time.monotonic() - started)
        if not readable:  # the oldest pending span waited flush_interval_s
            write(load.is_behind)
            continue
        data = os.read(stdin, _READ_SIZE)
        if not data:
            break
        lines = (partial + data).split(b"\n")
        partial = lines.pop()
        load.arrived(len(lines))
        for line in lines:
            if line.startswith(b"#flush "):
                if pending:
                    write(_always)
                report(b"flushed " + line[7:].strip())
                continue
            if not line:
                continue
            if not pending:
                oldest = time.monotonic()
            # Converted when written, in slices with pauses: converting each chunk as it
            # arrives came in bursts that showed in the gateway's p99 at concurrency 1.
            pending.append(line)
            # Behind, gather a bigger transaction first: each commit appends every index
            # page it dirtied to the WAL, and the pages of random-key indexes are shared
            # by more rows in a bigger one.
            if len(pending) >= (batch_size * _BEHIND_BATCHES if load.behind else batch_size):
                write(load.is_behind)
    if pending:
        write(_always)
    report()
    return 0


def _always() -> bool:
    return True


class _Load:
    """Whether the recording process is behind, judged every `_LOAD_WINDOW_S`: spans
    arrived faster than `_BEHIND_RATE` a second, or it spent at least `_BEHIND_LOAD` of
    the window working rather than waiting for input.

    Behind, it writes flat out (no pauses, big statements, bigger transactions). Not
    behind, it works in slices with pauses: at a steady trickle the same CPU time spent in
    bursts delays the gateway's requests. The rate matters because the pauses themselves
    cap what it can take; when a sender throttles on a full queue (OTLP's 503), the
    process looks idle while it is the bottleneck.
    """

    def __init__(self) -> None:
        self.behind = False
        self._since = time.monotonic()
        self._idle_s = 0.0
        self._arrived = 0

    def arrived(self, count: int) -> None:
        """Count `count` spans received."""
        self._arrived += count

    def waited(self, seconds: float) -> None:
        """Count `seconds` spent waiting for input; re-judge once a window has passed."""
        self._idle_s += seconds
        now = time.monotonic()
        elapsed = now - self._since
        if elapsed >= _LOAD_WINDOW_S:
            busy = 1.0 - self._idle_s / elapsed
            self.behind = self._arrived / elapsed > _BEHIND_RATE or busy >= _BEHIND_LOAD
            self._since, self._idle_s, self._arrived = now, 0.0, 0

    def is_behind(self) -> bool:
        return self.behind


if __name__ == "__main__":
    sys.exit(child_main(sys.stdin.fileno(), sys.stdout.buffer))
