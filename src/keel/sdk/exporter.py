"""The background exporter: bounded queues, one daemon thread, batches, retries, counters.

The application's threads only append an ended span to a deque (and wake the
thread when a batch is full); encoding, HTTP and retries happen on the
`keel-exporter` daemon thread, started with the first span. A full queue drops
new spans and counts them; a batch the server refuses for good, or that still
fails after the retries, is dropped and counted too. Problems are logged at most
once a minute: a Keel server that is down costs the application a warning, not
latency. At interpreter exit (`atexit`) what is queued gets one last try, bounded
by `shutdown_timeout_s`.
"""

from __future__ import annotations

import atexit
import os
import random
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Final

from keel.core.deployments import RetryPolicy
from keel.core.retry import backoff_delay, parse_retry_after
from keel.sdk.config import SdkConfig
from keel.sdk.logs import LimitedLog
from keel.sdk.otlp import SCOPE_VERSION, RequestFrame, resource_attributes, span_json
from keel.sdk.spans import LiveSpan
from keel.sdk.transport import Transport, TransportError

MAX_SCORES: Final = 1000
MAX_BACKOFF_S: Final = 30.0
_RETRY_STATUSES: Final = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class ExportStats:
    """Counters since the client started (`keel.sdk.stats()`)."""

    spans_queued: int  # waiting to be sent
    spans_exported: int  # accepted by the server
    spans_dropped: int  # never sent: the queue was full (or the client shut down)
    spans_failed: int  # sent but refused, or still failing after the retries
    scores_queued: int
    scores_sent: int
    scores_dropped: int
    scores_failed: int
    retries: int  # requests retried after a connection error, 5xx, 408 or 429


class Exporter:
    """Sends ended spans and scores to the Keel server from a daemon thread."""

    def __init__(self, config: SdkConfig, transport: Transport, log: LimitedLog) -> None:
        self._traces_url = f"{config.host}/v1/traces"
        self._scores_url = f"{config.host}/api/scores"
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": f"keel-sdk/{SCOPE_VERSION}",
        }
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key}"
        self._frame = RequestFrame(
            resource_attributes(config.service_name, config.release, config.environment)
        )
        self._release, self._environment = config.release, config.environment
        self._max_queue, self._max_batch = config.max_queue, config.max_batch
        self._max_batch_bytes = config.max_batch_bytes
        self._interval_s, self._timeout_s = config.flush_interval_s, config.export_timeout_s
        self._shutdown_timeout_s = config.shutdown_timeout_s
        self._max_retries = config.max_retries
        self._policy = RetryPolicy(config.max_retries + 1, config.backoff_s, MAX_BACKOFF_S)
        self._transport, self._log = transport, log
        self._jitter = random.Random()
        self._spans: deque[LiveSpan] = deque()
        self._scores: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._waiters: list[threading.Event] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._hooks_registered = False
        # written by the application's threads (under the lock: drops are rare)
        self._spans_dropped = self._scores_dropped = 0
        # written by the exporter thread only
        self._spans_exported = self._spans_failed = 0
        self._scores_sent = self._scores_failed = self._retries = 0

    # -- the application's side ------------------------------------------------------------

    def add_span(self, span: LiveSpan) -> None:
        """Queue an ended span (the hot path: a deque append)."""
        spans = self._spans
        if len(spans) >= self._max_queue or self._closed:
            with self._lock:
                self._spans_dropped += 1
            return
        spans.append(span)
        if self._thread is None:
            self._start()
        elif len(spans) >= self._max_batch and not self._wake.is_set():
            self._wake.set()

    def add_score(self, body: bytes) -> None:
        """Queue one score's JSON body."""
        if len(self._scores) >= MAX_SCORES or self._closed:
            with self._lock:
                self._scores_dropped += 1
            return
        self._scores.append(body)
        if self._thread is None:
            self._start()
        self._wake.set()  # scores are rare and a person may be waiting to see theirs

    def flush(self, timeout_s: float) -> bool:
        """Send everything queued now; True if done within `timeout_s`."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return not self._spans and not self._scores
        done = threading.Event()
        with self._lock:
            self._waiters.append(done)
        self._wake.set()
        return done.wait(timeout_s)

    def shutdown(self, timeout_s: float) -> bool:
        """Stop accepting, give what is queued one last try, stop the thread; True if it ended."""
        self._closed = True
        if self._hooks_registered:
            atexit.unregister(self._at_exit)
        thread = self._thread
        if thread is None:
            return True
        self._stop.set()
        self._wake.set()
        if thread is not threading.current_thread():
            thread.join(timeout_s)
        return not thread.is_alive()

    def stats(self) -> ExportStats:
        """The counters now."""
        return ExportStats(
            spans_queued=len(self._spans),
            spans_exported=self._spans_exported,
            spans_dropped=self._spans_dropped,
            spans_failed=self._spans_failed,
            scores_queued=len(self._scores),
            scores_sent=self._scores_sent,
            scores_dropped=self._scores_dropped,
            scores_failed=self._scores_failed,
            retries=self._retries,
        )

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, name="keel-exporter", daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # e.g. spans ending while the interpreter shuts down
                self._closed = True
                self._log.internal_error("starting the exporter thread", exc)
                return
            self._thread = thread
            if not self._hooks_registered:
                self._hooks_registered = True
                atexit.register(self._at_exit)
                _forget_thread_in_forked_children(self)

    def _at_exit(self) -> None:
        self.shutdown(self._shutdown_timeout_s)

    def after_fork_in_child(self) -> None:
        """A forked child has no exporter thread; the parent sends what was queued."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._waiters = []
        self._spans.clear()
        self._scores.clear()
        self._thread = None

    # -- the exporter thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            if not stopping:
                self._wake.wait(self._interval_s)
            self._wake.clear()
            with self._lock:
                waiters, self._waiters = self._waiters, []
            try:
                self._send_spans(len(self._spans))
                self._send_scores(len(self._scores))
            except Exception as exc:  # a bug here must not end the thread
                self._log.internal_error("the exporter", exc)
            for waiter in waiters:
                waiter.set()
            if stopping:
                return

    def _send_spans(self, count: int) -> None:
        frame = len(self._frame.prefix) + len(self._frame.suffix)
        batch: list[bytes] = []
        size = frame
        for _ in range(count):
            try:
                span = self._spans.popleft()
            except IndexError:
                break
            try:
                span.serialise_pending()
                encoded = span_json(span, self._release, self._environment)
            except Exception as exc:
                self._log.internal_error("encoding a span", exc)
                self._spans_failed += 1
                continue
            if batch and (
                len(batch) >= self._max_batch or size + len(encoded) > self._max_batch_bytes
            ):
                self._post_spans(batch)
                batch, size = [], frame
            batch.append(encoded)
            size += len(encoded) + 1
        if batch:
            self._post_spans(batch)

    def _post_spans(self, batch: list[bytes]) -> None:
        if self._post(self._traces_url, self._frame.body(batch), len(batch), "spans"):
            self._spans_exported += len(batch)
        else:
            self._spans_failed += len(batch)

    def _send_scores(self, count: int) -> None:
        for _ in range(count):
            try:
                body = self._scores.popleft()
            except IndexError:
                break
            if self._post(self._scores_url, body, 1, "score"):
                self._scores_sent += 1
            else:
                self._scores_failed += 1

    def _post(self, url: str, body: bytes, count: int, what: str) -> bool:
        """POST with retries; True if the server accepted it."""
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                answer = self._transport.post(url, body, self._headers, self._timeout_s)
            except TransportError as exc:
                problem = str(exc)
            else:
                if 200 <= answer.status < 300:
                    return True
                problem = f"HTTP {answer.status}"
                if answer.status < 500 and answer.status not in _RETRY_STATUSES:
                    hint = " (check KEEL_API_KEY)" if answer.status in (401, 403) else ""
                    self._log.warn(
                        f"refused:{url}:{answer.status}",
                        "keel: %s refused %d %s with %s%s; they are dropped",
                        url,
                        count,
                        what,
                        problem,
                        hint,
                    )
                    return False
                retry_after = parse_retry_after(answer.retry_after, time.time())
            if attempt > self._max_retries or self._stop.is_set():
                break
            self._retries += 1
            delay = backoff_delay(self._policy, attempt, self._jitter.random(), retry_after)
            if self._stop.wait(delay):
                attempt = self._max_retries  # shutting down: one last try, now
        self._log.warn(
            f"failed:{url}",
            "keel: could not send %d %s to %s after %d attempt(s) (%s); they are dropped. "
            "The application is unaffected; repeats are muted for %.0f s.",
            count,
            what,
            url,
            attempt,
            problem,
            self._log.mute_s,
        )
        return False


def _forget_thread_in_forked_children(exporter: Exporter) -> None:
    ref = weakref.ref(exporter)

    def after_fork_in_child() -> None:
        alive = ref()
        if alive is not None:
            alive.after_fork_in_child()

    os.register_at_fork(after_in_child=after_fork_in_child)
