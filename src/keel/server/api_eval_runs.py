"""The REST API of eval runs under /api/evals/runs: create, list, results, finish.

A runner creates a run (what it pins: the dataset version, the task, the evaluators),
posts its results in batches as they finish (an upsert: sending a result again replaces
it), reads which (item, repetition) pairs are done when it resumes, and finishes the run
with its summary. Posting results also records each item's root span in the tracing
store (see `keel.evals.run_records`). Bodies are validated here; the rules are the
service's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field

from keel.core.eval_runs import (
    RUN_STATUSES,
    EvalRun,
    RunStatus,
    result_from_json,
    result_to_json,
    run_to_json,
)
from keel.evals.run_records import RunError, RunRecords
from keel.ports import RunFilter
from keel.server.api_router import ApiProblem, ApiRouter, Request, encode_cursor, validated

T = TypeVar("T")
RUNS_LIMIT = {"default": 50, "minimum": 1, "maximum": 500}
RUN_LIST_PARAMETERS = ("suite", "name", "dataset", "status", "limit", "cursor")
RESULTS_LIMIT = {"default": 1000, "minimum": 1, "maximum": 10_000}
_HEX32 = r"^[0-9a-f]{32}$"
_HEX16 = r"^[0-9a-f]{16}$"


class RunCreateBody(BaseModel):
    """`POST /api/evals/runs`: what the run pins."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    suite: str | None = Field(default=None, max_length=200)
    variant: str | None = Field(default=None, max_length=200)
    dataset: str = Field(min_length=1, max_length=100)
    dataset_version: int = Field(ge=1, le=2**31 - 1)
    task: dict[str, Any] = Field(
        default_factory=dict, description="The task as configured: kind, prompt, model..."
    )
    evaluators: list[dict[str, Any]] = Field(
        default_factory=list, description="Each evaluator's spec: name, type, params..."
    )
    repeat: int = Field(default=1, ge=1, le=1000)
    started_at: float | None = Field(default=None, description="Default: when it is created.")
    metadata: dict[str, Any] = Field(default_factory=dict)


class VerdictBody(BaseModel):
    """One evaluator's verdict on a result."""

    model_config = ConfigDict(extra="forbid")

    score: float | None = None
    passed: bool | None = None
    explanation: str = ""
    error: str | None = None
    raw: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class ResultBody(BaseModel):
    """One task call on one item (one repetition) and every evaluator's verdict."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1, max_length=200)
    repetition: int = Field(default=0, ge=0)
    output: str | None = None
    error: str | None = None
    latency_ms: float | None = Field(default=None, ge=0)
    cost_usd: float | None = Field(default=None, ge=0)
    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    trace_id: str | None = Field(default=None, pattern=_HEX32)
    span_id: str | None = Field(
        default=None,
        pattern=_HEX16,
        description="The item's root span in trace_id: recorded with the run's ids.",
    )
    started_at: float | None = None
    cached: bool = False
    verdicts: dict[str, VerdictBody] = Field(default_factory=dict)


class ResultsBody(BaseModel):
    """`POST /api/evals/runs/{run_id}/results`: a batch to upsert."""

    model_config = ConfigDict(extra="forbid")

    results: list[ResultBody] = Field(min_length=1, max_length=5000)


class FinishBody(BaseModel):
    """`POST /api/evals/runs/{run_id}/finish`."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["finished", "failed", "interrupted"] = "finished"
    summary: dict[str, Any] | None = None


def _run_call(call: Callable[[], T]) -> T:
    try:
        return call()
    except RunError as exc:
        raise ApiProblem(exc.status, exc.title, exc.message) from None


class EvalRunRoutes:
    """Routes over one `RunRecords`."""

    def __init__(self, runs: RunRecords) -> None:
        self._runs = runs

    def register(self, router: ApiRouter) -> None:
        """Add these routes to `router`."""
        router.send("POST", "/api/evals/runs", self.create)
        router.get("/api/evals/runs", self.list_runs, RUN_LIST_PARAMETERS)
        router.get("/api/evals/runs/{run_id}", self.run)
        router.send("POST", "/api/evals/runs/{run_id}/results", self.add_results)
        router.get("/api/evals/runs/{run_id}/results", self.results, ("limit", "cursor"))
        router.get("/api/evals/runs/{run_id}/completed", self.completed)
        router.send("POST", "/api/evals/runs/{run_id}/finish", self.finish)

    def create(self, request: Request) -> dict[str, Any]:
        body = validated(RunCreateBody, request.body)
        run = EvalRun(
            run_id="",
            name=body.name,
            suite=body.suite,
            variant=body.variant,
            dataset=body.dataset,
            dataset_version=body.dataset_version,
            task=body.task,
            evaluators=tuple(body.evaluators),
            repeat=body.repeat,
            status="running",
            started_at=body.started_at or 0.0,
            metadata=body.metadata,
        )
        return run_to_json(_run_call(lambda: self._runs.create(run)))

    def list_runs(self, request: Request) -> dict[str, Any]:
        query = request.query
        status = query.choice("status", RUN_STATUSES)
        where = RunFilter(
            suite=query.text("suite"),
            name=query.text("name"),
            dataset=query.text("dataset"),
            status=cast(RunStatus | None, status),
        )
        limit = query.integer("limit", **RUNS_LIMIT)
        runs = self._runs.list_runs(where, limit + 1, query.cursor("runs"))
        more = len(runs) > limit
        runs = runs[:limit]
        last = runs[-1] if more else None
        return {
            "data": [run_to_json(run) for run in runs],
            "next_cursor": last and encode_cursor("runs", (last.started_at, last.run_id)),
        }

    def run(self, request: Request) -> dict[str, Any]:
        run_id = request.path["run_id"]
        return run_to_json(_run_call(lambda: self._runs.get(run_id)))

    def add_results(self, request: Request) -> dict[str, Any]:
        run_id = request.path["run_id"]
        body = validated(ResultsBody, request.body)
        errors = [
            {"field": f"results.{index}.trace_id", "message": "required with span_id"}
            for index, result in enumerate(body.results)
            if result.span_id is not None and result.trace_id is None
        ]
        if errors:
            raise ApiProblem(422, "Invalid request", "The results were not stored.", errors)
        # The body is valid now; reading the documents themselves skips a model_dump per result.
        results = [result_from_json(document) for document in request.body["results"]]
        recorded = _run_call(lambda: self._runs.record(run_id, results))
        return {"stored": recorded.stored, "spans": recorded.spans, "status": recorded.run.status}

    def results(self, request: Request) -> dict[str, Any]:
        query = request.query
        run_id = request.path["run_id"]
        limit = query.integer("limit", **RESULTS_LIMIT)
        after = query.cursor("results")
        key = None if after is None else (int(after[0]), after[1])
        page = _run_call(lambda: self._runs.results(run_id, limit + 1, key))
        more = len(page) > limit
        page = page[:limit]
        last = page[-1] if more else None
        return {
            "data": [result_to_json(result) for result in page],
            "next_cursor": last
            and encode_cursor("results", (float(last.repetition), last.item_id)),
        }

    def completed(self, request: Request) -> dict[str, Any]:
        run_id = request.path["run_id"]
        done = _run_call(lambda: self._runs.completed(run_id))
        return {"data": [{"item_id": item_id, "repetition": rep} for item_id, rep in sorted(done)]}

    def finish(self, request: Request) -> dict[str, Any]:
        run_id = request.path["run_id"]
        body = validated(FinishBody, request.body)
        return run_to_json(_run_call(lambda: self._runs.finish(run_id, body.status, body.summary)))
