"""Eval runs: a task run over a dataset version, each item (and repetition) scored by the
run's evaluators.

A run pins what it used (dataset name and version, the task with its prompt version and
model, the evaluators with their thresholds), so two runs can be compared knowing what
differed. Each `ItemResult` is one task call on one item for one repetition: the output
(or the error that replaced it), latency, cost, the trace it was recorded in, and one
`Verdict` per evaluator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from keel.core.evaluation import Verdict

RunStatus = Literal["running", "finished", "failed", "interrupted"]
RUN_STATUSES: tuple[RunStatus, ...] = ("running", "finished", "failed", "interrupted")


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One task call on one item (one repetition), with every evaluator's verdict."""

    item_id: str
    repetition: int
    output: str | None
    error: str | None = None
    latency_ms: float | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    trace_id: str | None = None
    span_id: str | None = None  # the item's root span in that trace
    started_at: float | None = None  # wall-clock seconds when the task call began
    cached: bool = False
    verdicts: Mapping[str, Verdict] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EvalRun:
    """A run's identity and what it pinned; results are stored apart, item by item.

    `task` describes the task as configured (kind, prompt name and version, model alias,
    parameters); `evaluators` the evaluator specs as JSON; `summary` the aggregates once
    the run finished.
    """

    run_id: str
    name: str
    dataset: str
    dataset_version: int
    task: Mapping[str, Any]
    evaluators: tuple[Mapping[str, Any], ...]
    repeat: int
    status: RunStatus
    started_at: float
    finished_at: float | None = None
    suite: str | None = None
    variant: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    summary: Mapping[str, Any] | None = None


def verdict_to_json(verdict: Verdict) -> dict[str, Any]:
    """A verdict as stored and served."""
    doc: dict[str, Any] = {
        "score": verdict.score,
        "passed": verdict.passed,
        "explanation": verdict.explanation,
    }
    if verdict.error is not None:
        doc["error"] = verdict.error
    if verdict.raw is not None:
        doc["raw"] = verdict.raw
    if verdict.details:
        doc["details"] = dict(verdict.details)
    return doc


def verdict_from_json(doc: Mapping[str, Any]) -> Verdict:
    """The inverse of `verdict_to_json`."""
    score = doc.get("score")
    if score is not None and type(score) is not float:  # the usual case skips the checks
        score = float(score) if isinstance(score, int | float) else None
    passed = doc.get("passed")
    explanation = doc.get("explanation")
    # Positional: this runs for every verdict of every result read (a cached re-run reads
    # thousands), and keywords cost more than the check itself.
    return Verdict(
        score,
        passed if passed is True or passed is False else None,
        explanation if type(explanation) is str else str(explanation or ""),
        doc.get("error"),
        doc.get("raw"),
        doc.get("details") or {},
    )


def result_to_json(result: ItemResult) -> dict[str, Any]:
    """An item result as stored and served."""
    return {
        "item_id": result.item_id,
        "repetition": result.repetition,
        "output": result.output,
        "error": result.error,
        "latency_ms": result.latency_ms,
        "cost_usd": result.cost_usd,
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "trace_id": result.trace_id,
        "span_id": result.span_id,
        "started_at": result.started_at,
        "cached": result.cached,
        "verdicts": {name: verdict_to_json(v) for name, v in result.verdicts.items()},
    }


def result_from_json(doc: Mapping[str, Any]) -> ItemResult:
    """The inverse of `result_to_json`."""
    verdicts = doc.get("verdicts") or {}
    return ItemResult(
        item_id=str(doc["item_id"]),
        repetition=int(doc.get("repetition") or 0),
        output=doc.get("output"),
        error=doc.get("error"),
        latency_ms=doc.get("latency_ms"),
        cost_usd=doc.get("cost_usd"),
        input_tokens=doc.get("input_tokens"),
        output_tokens=doc.get("output_tokens"),
        trace_id=doc.get("trace_id"),
        span_id=doc.get("span_id"),
        started_at=doc.get("started_at"),
        cached=bool(doc.get("cached")),
        verdicts={str(k): verdict_from_json(v) for k, v in verdicts.items()},
    )


def run_to_json(run: EvalRun) -> dict[str, Any]:
    """A run as stored and served (without its results)."""
    return {
        "run_id": run.run_id,
        "name": run.name,
        "suite": run.suite,
        "variant": run.variant,
        "dataset": run.dataset,
        "dataset_version": run.dataset_version,
        "task": dict(run.task),
        "evaluators": [dict(e) for e in run.evaluators],
        "repeat": run.repeat,
        "status": run.status,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "metadata": dict(run.metadata),
        "summary": dict(run.summary) if run.summary is not None else None,
    }


def run_from_json(doc: Mapping[str, Any]) -> EvalRun:
    """The inverse of `run_to_json`."""
    return EvalRun(
        run_id=str(doc["run_id"]),
        name=str(doc.get("name") or ""),
        suite=doc.get("suite"),
        variant=doc.get("variant"),
        dataset=str(doc["dataset"]),
        dataset_version=int(doc["dataset_version"]),
        task=doc.get("task") or {},
        evaluators=tuple(doc.get("evaluators") or ()),
        repeat=int(doc.get("repeat") or 1),
        status=doc.get("status") or "running",
        started_at=float(doc.get("started_at") or 0.0),
        finished_at=doc.get("finished_at"),
        metadata=doc.get("metadata") or {},
        summary=doc.get("summary"),
    )
