"""The eval runner: a dataset version × a task × evaluators, concurrently, resumably.

Every (item, repetition) is one job: call the task, then run every evaluator on its answer.
At most `concurrency` jobs are in flight. Results go to a `RunStore` in batches as they
finish, so an interrupted run keeps everything done so far; resuming a run skips the
(item, repetition) pairs it already holds. Each job gets its own trace: the task's model
call and the judges' calls carry a `TraceLink` naming that trace and the item's root span,
with the run id, item id and repetition as metadata, so the gateway records them inside
the run's trace.

A task that fails for an item (the model errored after the gateway's retries, the prompt
did not render) is recorded as that item's error, and every evaluator's verdict for it is a
failed evaluation: the run goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from keel.core.datasets import DatasetItem, DatasetVersion
from keel.core.errors import KeelError, UpstreamError
from keel.core.eval_runs import EvalRun, ItemResult, RunStatus
from keel.core.evaluation import Case, Verdict
from keel.core.ids import new_span_id, new_trace_id
from keel.evals.registry import Evaluator
from keel.evals.response_cache import REPETITION_KEY, result_key
from keel.evals.tasks import Task, TaskError
from keel.ports import TraceLink

RUN_ID_KEY = "keel.eval.run_id"
ITEM_ID_KEY = "keel.eval.item_id"
TRACE_LINK_KEY = "trace_link"  # where evaluators find the link for their judge calls
_BATCH = 250  # results per store call; at most _BATCH_S of work is unstored at any time
_BATCH_S = 1.0


class RunStore(Protocol):
    """Where runs and their results are kept (the REST API, or memory in tests)."""

    async def create(self, run: EvalRun) -> EvalRun:
        """Store a new run; returns it with its id."""
        ...

    async def get(self, run_id: str) -> EvalRun | None: ...

    async def completed(self, run_id: str) -> set[tuple[str, int]]:
        """The (item id, repetition) pairs the run already has results for."""
        ...

    def add_results(self, run_id: str, results: Sequence[ItemResult]) -> Awaitable[None]:
        """Start storing a batch at once (not when first awaited); await it to know it is
        stored."""
        ...

    async def results(self, run_id: str) -> list[ItemResult]: ...

    async def finish(
        self, run_id: str, status: RunStatus, summary: dict[str, Any] | None
    ) -> EvalRun: ...


class ResultCache(Protocol):
    """Whole item results by what they depend on (`keel.evals.response_cache`)."""

    def get_result(self, key: str) -> ItemResult | None: ...

    def put_result(self, key: str, result: ItemResult) -> None: ...


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a run is: jobs done of total, served from cache, failed, and the ETA."""

    done: int
    total: int
    cached: int
    failed: int
    elapsed_s: float

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far (None before the first job finishes)."""
        if self.done == 0:
            return None
        return self.elapsed_s / self.done * (self.total - self.done)


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What to run: the run's names, the dataset version, the task and its evaluators."""

    name: str
    dataset: DatasetVersion
    task: Task
    evaluators: Sequence[Evaluator]
    repeat: int = 1
    concurrency: int = 16
    suite: str | None = None
    variant: str | None = None
    metadata: dict[str, Any] | None = None
    # Reuse an item's whole result when nothing it depends on changed; `cache_scope` names
    # what else it depends on (the gateway, the suite's judge model).
    cache: ResultCache | None = None
    cache_scope: str = ""

    def new_run(self, now: float) -> EvalRun:
        """The run record this spec starts, with everything it pins."""
        return EvalRun(
            run_id="",
            name=self.name,
            suite=self.suite,
            variant=self.variant,
            dataset=self.dataset.name,
            dataset_version=self.dataset.version,
            task=self.task.describe(),
            evaluators=tuple(_spec_json(e) for e in self.evaluators),
            repeat=self.repeat,
            status="running",
            started_at=now,
            metadata=self.metadata or {},
        )


Summarise = Callable[[EvalRun, list[ItemResult]], dict[str, Any]]


class Runner:
    """Runs a `RunSpec` into a `RunStore`."""

    def __init__(
        self,
        store: RunStore,
        *,
        summarise: Summarise | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._summarise = summarise
        self._on_progress = on_progress
        self._clock = clock
        self.current: EvalRun | None = None  # the run being run (to name it on Ctrl-C)
        self.results: list[ItemResult] = []  # every result of the run, once it has ended

    async def run(self, spec: RunSpec, resume: str | None = None) -> EvalRun:
        """Run every (item, repetition) not yet done; returns the finished run.

        `resume` names a run to continue (it must be of the same dataset version). On
        cancellation (Ctrl-C), results so far are kept and the run is marked interrupted.
        """
        if resume is None:
            run = await self._store.create(spec.new_run(self._clock()))
            done: set[tuple[str, int]] = set()
        else:
            found = await self._store.get(resume)
            if found is None:
                raise KeelError(f"no eval run {resume!r} to resume")
            if (found.dataset, found.dataset_version) != (spec.dataset.name, spec.dataset.version):
                raise KeelError(
                    f"run {resume} used {found.dataset} v{found.dataset_version}; "
                    f"this suite now uses v{spec.dataset.version}: start a new run"
                )
            run = found
            done = await self._store.completed(resume)
        self.current = run
        jobs = [
            (item_index, repetition)
            for repetition in range(spec.repeat)
            for item_index, item in enumerate(spec.dataset.items)
            if (item.id, repetition) not in done
        ]
        batch = _Batch(self._store, run.run_id)
        tally = _Tally(total=len(jobs), started=time.perf_counter())
        queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)

        produced: list[ItemResult] = []

        async def worker() -> None:
            while not queue.empty():
                item_index, repetition = queue.get_nowait()
                result = await self._job(spec, run.run_id, item_index, repetition)
                tally.count(result)
                produced.append(result)
                if self._on_progress is not None:
                    self._on_progress(tally.progress())
                batch.add(result)

        workers = [asyncio.create_task(worker()) for _ in range(max(1, spec.concurrency))]
        status: RunStatus = "finished"
        try:
            await asyncio.gather(*workers)
        except asyncio.CancelledError:
            status = "interrupted"
            await _stop(workers)
        except BaseException:  # the store refused results, or a bug: stop, then say why
            await _stop(workers)
            await batch.abandon()
            raise
        flushing = asyncio.ensure_future(batch.flush())
        if resume is None:
            self.results = produced  # all of them: summarised while the last ones are sent
        summary = None
        if status == "finished" and self._summarise is not None and resume is None:
            summary = self._summarise(run, produced)
        await asyncio.shield(flushing)
        if resume is not None:  # a resumed run's earlier results are in the store
            self.results = await self._store.results(run.run_id)
            if status == "finished" and self._summarise is not None:
                summary = self._summarise(run, self.results)
        finished = await asyncio.shield(self._store.finish(run.run_id, status, summary))
        if status == "interrupted":
            raise asyncio.CancelledError
        return finished

    async def _job(
        self, spec: RunSpec, run_id: str, item_index: int, repetition: int
    ) -> ItemResult:
        """One (item, repetition): a reused result, or the task called and evaluated."""
        item = spec.dataset.items[item_index]
        started_at = self._clock()
        key = _result_key(spec, item, repetition)
        if key is not None and spec.cache is not None:
            reused = spec.cache.get_result(key)
            if reused is not None:
                return replace(
                    reused, repetition=repetition, span_id=None, started_at=started_at, cached=True
                )
        result = await self._evaluate(spec, run_id, item, repetition, started_at)
        if key is not None and spec.cache is not None and _reusable(result):
            spec.cache.put_result(key, result)
        return result

    async def _evaluate(
        self, spec: RunSpec, run_id: str, item: DatasetItem, repetition: int, started_at: float
    ) -> ItemResult:
        link = TraceLink(
            trace_id=new_trace_id(),
            parent_span_id=new_span_id(),
            tags=("eval",),
            metadata={RUN_ID_KEY: run_id, ITEM_ID_KEY: item.id, REPETITION_KEY: repetition},
        )
        try:
            output = await spec.task.run(item, link)
        except (UpstreamError, TaskError) as exc:
            error = exc.message if isinstance(exc, UpstreamError) else str(exc)
            return _failed(item.id, repetition, link, started_at, f"task failed: {error}", spec)
        case = Case(
            input=item.input,
            output=output.output,
            expected=item.expected,
            context=output.context if output.context is not None else item.context,
            metadata={**item.metadata, TRACE_LINK_KEY: link},
            latency_ms=output.latency_ms,
            cost_usd=output.cost_usd,
        )
        verdicts = await asyncio.gather(*(e.evaluate(case) for e in spec.evaluators))
        return ItemResult(
            item_id=item.id,
            repetition=repetition,
            output=output.output,
            latency_ms=output.latency_ms,
            cost_usd=output.cost_usd,
            input_tokens=output.input_tokens,
            output_tokens=output.output_tokens,
            trace_id=output.trace_id if output.cached else link.trace_id,
            span_id=None if output.cached else link.parent_span_id,
            started_at=started_at,
            cached=output.cached,
            verdicts={e.name: v for e, v in zip(spec.evaluators, verdicts, strict=True)},
        )


async def _stop(workers: list[asyncio.Task[None]]) -> None:
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)


def _result_key(spec: RunSpec, item: DatasetItem, repetition: int) -> str | None:
    if spec.cache is None:
        return None
    request = spec.task.request_key(item, repetition)
    if request is None:
        return None
    return result_key(request, item, [e.fingerprint for e in spec.evaluators], spec.cache_scope)


def _reusable(result: ItemResult) -> bool:
    """Only complete results are reused: a failed call or evaluation is tried again."""
    return result.error is None and all(v.ok for v in result.verdicts.values())


def _failed(
    item_id: str, repetition: int, link: TraceLink, started_at: float, error: str, spec: RunSpec
) -> ItemResult:
    return ItemResult(
        item_id=item_id,
        repetition=repetition,
        output=None,
        error=error,
        trace_id=link.trace_id,
        span_id=link.parent_span_id,
        started_at=started_at,
        verdicts={e.name: Verdict.failed(error) for e in spec.evaluators},
    )


def _spec_json(evaluator: Evaluator) -> dict[str, Any]:
    spec = evaluator.spec
    return {
        "name": evaluator.name,
        "type": spec.type,
        "params": dict(spec.params),
        "threshold": evaluator.threshold,
        "negate": spec.negate,
        "weight": spec.weight,
    }


@dataclass
class _Tally:
    total: int
    started: float
    done: int = 0
    cached: int = 0
    failed: int = 0

    def count(self, result: ItemResult) -> None:
        self.done += 1
        self.cached += result.cached
        self.failed += result.error is not None

    def progress(self) -> Progress:
        elapsed = time.perf_counter() - self.started
        return Progress(self.done, self.total, self.cached, self.failed, elapsed)


class _Batch:
    """Results waiting to be stored, sent every `_BATCH` results or `_BATCH_S` seconds.

    A send starts the moment it is due and the store works on it while jobs go on: no job
    waits for it. Sends are independent (results upsert by item and repetition), so
    several may be in flight; `flush` waits for all of them.
    """

    def __init__(self, store: RunStore, run_id: str) -> None:
        self._store = store
        self._run_id = run_id
        self._pending: list[ItemResult] = []
        self._last = time.perf_counter()
        self._sending: list[Awaitable[None]] = []

    def add(self, result: ItemResult) -> None:
        self._pending.append(result)
        if len(self._pending) >= _BATCH or time.perf_counter() - self._last >= _BATCH_S:
            self._start()

    def _start(self) -> None:
        self._raise_failed_send()  # a store that refuses results stops the run here
        pending, self._pending = self._pending, []
        self._last = time.perf_counter()
        self._sending.append(self._store.add_results(self._run_id, pending))

    def _raise_failed_send(self) -> None:
        still = []
        for sending in self._sending:
            if not (isinstance(sending, asyncio.Future) and sending.done()):
                still.append(sending)
                continue
            error = sending.exception()
            if error is not None:
                raise error
        self._sending = still

    async def abandon(self) -> None:
        """Wait for the sends in flight, whatever they end in; keep what is not sent."""
        sending, self._sending = self._sending, []
        await asyncio.gather(*sending, return_exceptions=True)

    async def flush(self) -> None:
        """Store what is left and wait until every send is done (raising the first error)."""
        if self._pending:
            self._start()
        sending, self._sending = self._sending, []
        await asyncio.gather(*sending)
