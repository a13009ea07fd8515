"""Online evaluation: score a sample of live traffic with the same evaluators, off the
request path.

Each rule names which spans it wants (generations by default; optionally only those of a
prompt, a model alias or carrying tags), the fraction to sample, and its evaluators. The
span sink hands every finished span to `OnlineEvaluator.offer`, which only checks the rule
and the sample (a hash of the trace id, so a trace is in or out for good) and queues the
span; nothing waits on an evaluator. Worker tasks evaluate queued spans and store one score
per evaluator on the span's trace with source `evaluator`. A full queue drops the span and
counts it. Spans of eval runs and of the evaluators' own judge calls (tagged `eval`) are
never sampled, so judging cannot feed itself.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core.evaluation import Case, Verdict
from keel.core.rollout import bucket
from keel.core.scores import Score
from keel.core.spans import Span
from keel.evals.registry import Evaluator
from keel.ports import SpanQueue, TraceLink

log = logging.getLogger("keel.evals.online")
EVAL_TAG = "eval"  # eval runs and judge calls carry it; online rules skip such spans


@dataclass(frozen=True, slots=True)
class SpanMatch:
    """Which spans a rule looks at."""

    kind: str = "generation"
    prompt: str | None = None  # the registry prompt the gateway rendered
    model: str | None = None  # the alias called
    tags: tuple[str, ...] = ()  # all of them

    def matches(self, span: Span) -> bool:
        """Whether `span` is one of those (a successful call with an output)."""
        if span.kind != self.kind or span.status != "ok" or span.output is None:
            return False
        if EVAL_TAG in span.tags:
            return False
        if self.model is not None and span.alias != self.model:
            return False
        if self.prompt is not None and span.attributes.get("keel.prompt.name") != self.prompt:
            return False
        return all(tag in span.tags for tag in self.tags)


@dataclass(frozen=True, slots=True)
class OnlineRule:
    """Score `sample` (0..1) of the spans `match` selects with `evaluators`."""

    name: str
    match: SpanMatch
    sample: float
    evaluators: Sequence[Evaluator]

    def wants(self, span: Span) -> bool:
        """In the rule and in the sample."""
        return self.match.matches(span) and bucket(self.name, span.trace_id) < self.sample * 100


@dataclass
class OnlineStats:
    """What the online evaluator did since start."""

    sampled: int = 0
    dropped: int = 0  # the queue was full
    scored: int = 0  # spans whose scores were stored
    failed_evaluations: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)


ScoreSink = Callable[[Score], object]  # stores a score (blocking); the repository's `add`


class OnlineEvaluator:
    """Queues sampled spans and scores them in background workers."""

    def __init__(
        self,
        rules: Sequence[OnlineRule],
        store_score: ScoreSink,
        *,
        workers: int = 4,
        max_queue: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rules = list(rules)
        self._store_score = store_score
        self._workers = workers
        self._queue: asyncio.Queue[tuple[OnlineRule, Span]] = asyncio.Queue(max_queue)
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.stats = OnlineStats()

    def offer(self, span: Span) -> None:
        """Queue the span for every rule that samples it; never blocks, never raises.

        Safe from any thread: a span offered off the event loop's thread is queued by the
        loop (spans of API handlers that run in worker threads)."""
        for rule in self._rules:
            if not rule.wants(span):
                continue
            loop = self._loop
            if loop is not None and threading.get_ident() != self._loop_thread:
                loop.call_soon_threadsafe(self._enqueue, rule, span)
            else:
                self._enqueue(rule, span)

    def _enqueue(self, rule: OnlineRule, span: Span) -> None:
        try:
            self._queue.put_nowait((rule, span))
        except asyncio.QueueFull:
            self.stats.dropped += 1
        else:
            self.stats.sampled += 1

    def start(self) -> None:
        """Start the workers in the running loop."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]

    async def drain(self) -> None:
        """Wait until every queued span has been scored."""
        await self._queue.join()

    async def stop(self) -> None:
        """Stop the workers; spans still queued are not scored."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _work(self) -> None:
        while True:
            rule, span = await self._queue.get()
            try:
                await self._score(rule, span)
            except Exception:  # a bug in one evaluation must not stop the worker
                log.exception("online evaluation %s failed on trace %s", rule.name, span.trace_id)
            finally:
                self._queue.task_done()

    async def _score(self, rule: OnlineRule, span: Span) -> None:
        case = span_case(span)
        verdicts = await asyncio.gather(*(e.evaluate(case) for e in rule.evaluators))
        scores = [
            _score(rule, evaluator, verdict, span, self._clock())
            for evaluator, verdict in zip(rule.evaluators, verdicts, strict=True)
        ]
        for score in scores:
            await asyncio.to_thread(self._store_score, score)
        self.stats.scored += 1
        self.stats.failed_evaluations += sum(not v.ok for v in verdicts)
        self.stats.by_rule[rule.name] = self.stats.by_rule.get(rule.name, 0) + 1


class SamplingSink:
    """A span queue that also offers every span to online evaluation (attached later: the
    evaluators' judge calls go through the gateway, which records into this sink)."""

    def __init__(self, inner: SpanQueue) -> None:
        self._inner = inner
        self.online: OnlineEvaluator | None = None

    def emit(self, span: Span) -> None:
        """Queue the span for storage, then offer it for sampling."""
        self._inner.emit(span)
        if self.online is not None:
            self.online.offer(span)

    def room(self) -> int:
        """The storage queue's room."""
        return self._inner.room()


def span_case(span: Span) -> Case:
    """What an evaluator sees of a recorded call: the last user message, the answer,
    latency and cost. Judge calls join the span's trace (tagged `eval`)."""
    link = TraceLink(trace_id=span.trace_id, parent_span_id=span.span_id, tags=(EVAL_TAG, "online"))
    return Case(
        input=message_text(span.input, role="user"),
        output=output_text(span.output),
        metadata={**span.metadata, "trace_link": link},
        latency_ms=(span.end_time - span.start_time) * 1000.0,
        cost_usd=span.cost_usd,
    )


def message_text(value: Any, role: str) -> str:
    """The text of the last message of `role` in a message list (or the value as text)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for message in reversed(value):
            if isinstance(message, Mapping) and message.get("role") == role:
                return _content(message.get("content"))
    return "" if value is None else str(value)


def output_text(value: Any) -> str:
    """The assistant's text in a recorded output (choices, a message or a text)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        choices = value.get("choices")
        if isinstance(choices, list) and choices:
            value = choices[0]
        if isinstance(value, Mapping) and isinstance(value.get("message"), Mapping):
            value = value["message"]
        if isinstance(value, Mapping):
            return _content(value.get("content"))
    return "" if value is None else str(value)


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
    return ""


def _score(
    rule: OnlineRule, evaluator: Evaluator, verdict: Verdict, span: Span, now: float
) -> Score:
    """A numeric score in [0, 1]; a failed evaluation is the category `failed` with the
    reason, so it shows on the trace without posing as a number."""
    failed = verdict.score is None
    comment = f"evaluation failed: {verdict.error}" if failed else verdict.explanation
    return Score(
        score_id=uuid.uuid4().hex,
        name=evaluator.name,
        data_type="categorical" if failed else "numeric",
        value=verdict.score,
        string_value="failed" if failed else None,
        trace_id=span.trace_id,
        span_id=span.span_id,
        session_id=span.session_id,
        source="evaluator",
        comment=f"[{rule.name}] {comment}" if comment else f"[{rule.name}]",
        author=f"online:{rule.name}",
        created_at=now,
    )
