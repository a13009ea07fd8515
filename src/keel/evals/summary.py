"""What one eval run says: per evaluator the mean score and pass rate with confidence
intervals, errors and flaky items; per run latency percentiles, cost and task errors.

Items are the independent units. With repetitions (`ItemResult.repetition` 0..N-1) the
repetitions of one item are not independent draws, so each item is aggregated first (its
mean score and its pass rate over its repetitions) and every interval is over items:

- mean score: Student-t interval of the per-item mean scores (n = items with a score);
- pass rate: Wilson interval with the items as trials and the sum of per-item pass rates
  as successes. Without repetitions this is the usual Wilson interval; with them it is
  conservative, since a per-item rate in [0, 1] with mean p has variance at most p(1 - p).

A failed evaluation (`Verdict.error`, no score) is counted in `errors` and as a failure
in the pass rate, and is left out of the mean score: never a silent 0. A task call that
failed and carries no verdict for an evaluator the run uses counts as a failed evaluation
of that evaluator. An unknown cost is not $0: totals and means are over the known costs,
and `unknown` says how many there were.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from keel.core.eval_runs import ItemResult
from keel.core.evaluation import Verdict
from keel.core.stats import (
    Estimate,
    estimate_to_json,
    mean_interval,
    percentile,
    proportion_interval,
)

INTERVALS = (
    "per item first (mean over its repetitions), then over items: Student-t for the mean "
    "score, Wilson with items as trials for the pass rate"
)
_TASK_FAILED = "the task failed, so there was nothing to evaluate"


@dataclass(frozen=True, slots=True)
class ItemVerdicts:
    """One evaluator's verdicts on one item, over its repetitions (in repetition order)."""

    item_id: str
    scores: tuple[float, ...]  # of the evaluations that were done
    passes: tuple[bool, ...]  # one per evaluation; a failed evaluation is False
    errors: int

    @property
    def mean_score(self) -> float | None:
        """The mean over the repetitions that were scored; None when none was."""
        return sum(self.scores) / len(self.scores) if self.scores else None

    @property
    def pass_rate(self) -> float:
        """The share of repetitions that passed."""
        return sum(self.passes) / len(self.passes)

    @property
    def passed(self) -> bool:
        """Passed in more than half of its repetitions (for one repetition: passed)."""
        return self.pass_rate > 0.5

    @property
    def flaky(self) -> bool:
        """Passed in some repetitions and failed in others."""
        return len(set(self.passes)) > 1


@dataclass(frozen=True, slots=True)
class EvaluatorSummary:
    """One evaluator over a run. Intervals are over items (see the module docstring)."""

    name: str
    items: int
    evaluations: int
    errors: int
    mean_score: Estimate | None
    pass_rate: Estimate | None
    flaky_items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CostSummary:
    """What a run's task calls cost; `total_usd` covers only the `known` calls."""

    total_usd: float | None
    mean_usd: float | None
    known: int
    unknown: int


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run's aggregates: per evaluator, then latency, cost and task errors."""

    results: int
    items: int
    repetitions: int
    task_errors: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_known: int
    cost: CostSummary
    evaluators: tuple[EvaluatorSummary, ...]
    confidence: float


def item_verdicts(
    results: Iterable[ItemResult], evaluators: Sequence[str] = ()
) -> dict[str, dict[str, ItemVerdicts]]:
    """Verdicts grouped by evaluator name, then item id, repetitions in order.

    `evaluators` names the run's evaluators (listed even when no verdict of theirs exists);
    any other name found in the results follows.
    """
    ordered = sorted(results, key=lambda r: (r.item_id, r.repetition))
    names = list(dict.fromkeys([*evaluators, *(name for r in ordered for name in r.verdicts)]))
    # One pass, accumulating each (evaluator, item) in place: this runs on every finished run.
    grouped: dict[str, dict[str, tuple[list[float], list[bool], list[int]]]] = {
        name: {} for name in names
    }
    task_failed = Verdict.failed(_TASK_FAILED)
    for result in ordered:
        verdicts = result.verdicts
        for name in names:
            verdict = verdicts.get(name)
            if verdict is None:
                if result.error is None:
                    continue
                verdict = task_failed
            entry = grouped[name].get(result.item_id)
            if entry is None:
                entry = grouped[name][result.item_id] = ([], [], [0])
            ok = verdict.error is None
            if ok and verdict.score is not None:
                entry[0].append(float(verdict.score))
            entry[1].append(ok and bool(verdict.passed))
            if not ok:
                entry[2][0] += 1
    return {
        name: {
            item: ItemVerdicts(item, tuple(scores), tuple(passes), errors[0])
            for item, (scores, passes, errors) in items.items()
        }
        for name, items in grouped.items()
    }


def summarize_run(
    results: Sequence[ItemResult], *, evaluators: Sequence[str] = (), confidence: float = 0.95
) -> RunSummary:
    """Summarise a run's item results (see the module docstring for the conventions).

    `evaluators` names the run's evaluators, so one that never returned a verdict (every
    task call failed) is still reported, with all its evaluations failed.
    """
    latencies = [float(r.latency_ms) for r in results if r.latency_ms is not None]
    costs = [float(r.cost_usd) for r in results if r.cost_usd is not None]
    per_evaluator = tuple(
        _summarize_evaluator(name, items, confidence)
        for name, items in item_verdicts(results, evaluators).items()
    )
    return RunSummary(
        results=len(results),
        items=len({r.item_id for r in results}),
        repetitions=len({r.repetition for r in results}),
        task_errors=sum(1 for r in results if r.error is not None),
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        latency_known=len(latencies),
        cost=CostSummary(
            total_usd=sum(costs) if costs else None,
            mean_usd=sum(costs) / len(costs) if costs else None,
            known=len(costs),
            unknown=len(results) - len(costs),
        ),
        evaluators=per_evaluator,
        confidence=confidence,
    )


def summary_to_json(summary: RunSummary) -> dict[str, Any]:
    """A run summary as plain JSON (what `EvalRun.summary` stores and the API serves)."""
    return {
        "results": summary.results,
        "items": summary.items,
        "repetitions": summary.repetitions,
        "task_errors": summary.task_errors,
        "confidence": summary.confidence,
        "intervals": INTERVALS,
        "latency_ms": {
            "p50": summary.latency_p50_ms,
            "p95": summary.latency_p95_ms,
            "known": summary.latency_known,
        },
        "cost_usd": {
            "total": summary.cost.total_usd,
            "mean": summary.cost.mean_usd,
            "known": summary.cost.known,
            "unknown": summary.cost.unknown,
        },
        "evaluators": {
            e.name: {
                "items": e.items,
                "evaluations": e.evaluations,
                "errors": e.errors,
                "mean_score": estimate_to_json(e.mean_score),
                "pass_rate": estimate_to_json(e.pass_rate),
                "flaky": len(e.flaky_items),
                "flaky_items": list(e.flaky_items),
            }
            for e in summary.evaluators
        },
    }


def _summarize_evaluator(
    name: str, items: dict[str, ItemVerdicts], confidence: float
) -> EvaluatorSummary:
    per_item = list(items.values())
    means = [m for m in (i.mean_score for i in per_item) if m is not None]
    return EvaluatorSummary(
        name=name,
        items=len(per_item),
        evaluations=sum(len(i.passes) for i in per_item),
        errors=sum(i.errors for i in per_item),
        mean_score=mean_interval(means, confidence),
        pass_rate=proportion_interval(
            sum(i.pass_rate for i in per_item), len(per_item), confidence
        ),
        flaky_items=tuple(sorted(i.item_id for i in per_item if i.flaky)),
    )
