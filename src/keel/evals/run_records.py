"""Eval runs as the server keeps them: the rules for creating, recording and finishing runs.

Storage is behind `keel.ports.EvalRunRepository`. A run pins a dataset version that must
be stored (so a comparison knows which data it used); its id is made here. Results are
upserted by (item, repetition), so a resumed run may send a result again; each result
must name an item of the run's dataset version and a repetition below the run's `repeat`.
Results arriving for an interrupted or failed run mean it was resumed: it is running
again. A finished run takes no more results (start a new run instead).

Each result whose root span was not recorded yet becomes one span in the tracing store
(`result_span`): the item's root in the trace the runner named, under which the gateway
records the task's and the judges' model calls (they carry a `traceparent` naming it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from keel.core.datasets import DatasetItem
from keel.core.eval_runs import RUN_STATUSES, EvalRun, ItemResult, RunStatus
from keel.core.ids import new_trace_id
from keel.core.spans import Span
from keel.ports import DatasetRepository, EvalRunRepository, RunFilter, SpanSink

FINAL_STATUSES: tuple[RunStatus, ...] = tuple(s for s in RUN_STATUSES if s != "running")
RUN_ID = "keel.eval.run_id"
ITEM_ID = "keel.eval.item_id"
REPETITION = "keel.eval.repetition"
EVAL_TAG = "eval"


class RunError(Exception):
    """A request about runs that is refused; `status` is its HTTP status (404, 409, 422)."""

    status = 422
    title = "Invalid request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RunNotFound(RunError):
    """An unknown run."""

    status = 404
    title = "Not Found"


class RunConflict(RunError):
    """A change the run's state does not allow (results for a finished run)."""

    status = 409
    title = "Conflict"


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a batch of results did: how many were stored, how many spans were recorded."""

    stored: int
    spans: int
    run: EvalRun


class RunRecords:
    """Eval runs and their results, with their rules and their spans."""

    def __init__(
        self,
        runs: EvalRunRepository,
        datasets: DatasetRepository,
        spans: SpanSink,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._runs = runs
        self._datasets = datasets
        self._spans = spans
        self._clock = clock

    def create(self, run: EvalRun) -> EvalRun:
        """Store `run` as a new running run with a fresh id; returns it."""
        if self._datasets.version(run.dataset, run.dataset_version) is None:
            stored = self._datasets.latest(run.dataset)
            hint = (
                f"its newest is v{stored.version}"
                if stored is not None
                else "push it first with `keel datasets push`"
            )
            raise RunError(
                f"dataset {run.dataset!r} has no version {run.dataset_version} ({hint}); "
                "a run pins a stored dataset version"
            )
        created = replace(
            run,
            run_id=new_trace_id(),
            status="running",
            started_at=run.started_at or self._clock(),
            finished_at=None,
            summary=None,
        )
        self._runs.create(created)
        return created

    def get(self, run_id: str) -> EvalRun:
        """The run; RunNotFound when there is none."""
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFound(f"no eval run {run_id!r}; `GET /api/evals/runs` lists them")
        return run

    def list_runs(
        self, where: RunFilter, limit: int, after: tuple[float, str] | None = None
    ) -> list[EvalRun]:
        """Runs matching `where`, newest first."""
        return self._runs.list_runs(where, limit, after)

    def results(
        self, run_id: str, limit: int, after: tuple[int, str] | None = None
    ) -> list[ItemResult]:
        """A page of the run's results by repetition, then item id."""
        self.get(run_id)
        return self._runs.results(run_id, limit, after)

    def completed(self, run_id: str) -> set[tuple[str, int]]:
        """The (item id, repetition) pairs the run has results for (a resume skips them)."""
        self.get(run_id)
        return self._runs.completed(run_id)

    def record(self, run_id: str, results: Sequence[ItemResult]) -> Recorded:
        """Upsert a batch of results and record the root span of each new one."""
        run = self.get(run_id)
        if run.status == "finished":
            raise RunConflict(
                f"run {run_id} is finished; it takes no more results (start a new run)"
            )
        self._check(run, results)
        fresh = self._runs.upsert_results(run_id, results)
        if run.status != "running":
            run = self._runs.set_status(run_id, "running", None, None) or run
        if fresh:  # only these need their items read (for the spans' input)
            ids = [result.item_id for result in fresh]
            items = self._datasets.items_by_id(run.dataset, run.dataset_version, ids)
            for result in fresh:
                self._spans.emit(result_span(run, result, items[result.item_id], self._clock()))
        return Recorded(len(results), len(fresh), run)

    def finish(self, run_id: str, status: RunStatus, summary: Mapping[str, Any] | None) -> EvalRun:
        """Mark the run finished, failed or interrupted, with its summary (if given)."""
        if status not in FINAL_STATUSES:
            raise RunError(f"a run ends as one of {', '.join(FINAL_STATUSES)}, not {status!r}")
        self.get(run_id)
        finished = self._runs.set_status(run_id, status, self._clock(), summary)
        if finished is None:
            raise RunNotFound(f"no eval run {run_id!r}")
        return finished

    def _check(self, run: EvalRun, results: Sequence[ItemResult]) -> None:
        """RunError naming the first result that is not of this run's items and repetitions."""
        seen: set[tuple[str, int]] = set()
        for index, result in enumerate(results):
            key = (result.item_id, result.repetition)
            if key in seen:
                raise RunError(
                    f"results[{index}]: item {result.item_id!r} repetition "
                    f"{result.repetition} is in the batch twice"
                )
            seen.add(key)
            if not 0 <= result.repetition < run.repeat:
                raise RunError(
                    f"results[{index}]: repetition {result.repetition} is outside the run's "
                    f"0..{run.repeat - 1} (repeat {run.repeat})"
                )
        ids = sorted({result.item_id for result in results})
        known = self._datasets.item_ids(run.dataset, run.dataset_version, ids)
        for index, result in enumerate(results):
            if result.item_id not in known:
                raise RunError(
                    f"results[{index}]: item {result.item_id!r} is not in dataset "
                    f"{run.dataset!r} v{run.dataset_version}"
                )


def result_span(run: EvalRun, result: ItemResult, item: DatasetItem, now: float) -> Span:
    """The root span of one result: the item's input, the task's output, the run's ids
    (starting `now` when the result does not say when its task call began)."""
    assert result.trace_id is not None and result.span_id is not None
    start = result.started_at if result.started_at is not None else now
    attributes = {RUN_ID: run.run_id, ITEM_ID: result.item_id, REPETITION: result.repetition}
    return Span(
        trace_id=result.trace_id,
        span_id=result.span_id,
        name=f"eval {run.name}",
        kind="span",
        start_time=start,
        end_time=start + (result.latency_ms or 0.0) / 1000.0,
        status="error" if result.error is not None else "ok",
        error=result.error,
        tags=[EVAL_TAG],
        metadata=dict(attributes),
        input=item.input,
        output=result.output,
        attributes={
            **attributes,
            "keel.eval.dataset": run.dataset,
            "keel.eval.dataset_version": run.dataset_version,
            "keel.eval.cached": result.cached,
        },
    )
