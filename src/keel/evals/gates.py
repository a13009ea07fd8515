"""CI quality gates: a suite's rules checked against a run and its comparison to a baseline.

Absolute gates compare a run's point estimate with a bound ("answers pass_rate >= 0.9");
the evaluator `overall` is the weighted mean of every evaluator's figure, with the weights
the suite gives. Regression rules need a baseline run: each named evaluator (or all) fails
when the interval of candidate − baseline lies wholly below −margin at the rule's
confidence (`keel.evals.comparison.worse_by_more_than`). A regression rule without a
baseline is reported as skipped, not passed silently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from keel.evals.comparison import RunComparison, worse_by_more_than
from keel.evals.suite import OVERALL, Gate, RegressionRule
from keel.evals.summary import RunSummary

Outcome = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class GateResult:
    """One rule checked: its text, the outcome and the figures behind it."""

    rule: str
    outcome: Outcome
    detail: str

    @property
    def failed(self) -> bool:
        """True when the rule failed (a skipped rule does not fail the build)."""
        return self.outcome == "failed"


def metric_value(
    summary: RunSummary, evaluator: str, metric: str, weights: Mapping[str, float]
) -> float | None:
    """The run's point estimate of `metric` for `evaluator` (or `overall`)."""
    figures: dict[str, float] = {}
    for entry in summary.evaluators:
        estimate = entry.mean_score if metric == "mean" else entry.pass_rate
        if estimate is not None:
            figures[entry.name] = estimate.value
    if evaluator != OVERALL:
        return figures.get(evaluator)
    total = sum(weights.get(name, 1.0) for name in figures)
    if not figures or total <= 0:
        return None
    return sum(value * weights.get(name, 1.0) for name, value in figures.items()) / total


def check_gate(gate: Gate, summary: RunSummary, weights: Mapping[str, float]) -> GateResult:
    """An absolute rule against a run's figures."""
    value = metric_value(summary, gate.evaluator, gate.metric, weights)
    if value is None:
        return GateResult(
            str(gate), "failed", f"{gate.evaluator} has no {gate.metric}: every evaluation failed"
        )
    low_ok = gate.min is None or value >= gate.min
    high_ok = gate.max is None or value <= gate.max
    outcome: Outcome = "passed" if low_ok and high_ok else "failed"
    return GateResult(str(gate), outcome, f"{gate.evaluator} {gate.metric} = {value:.3f}")


def check_regression(
    rule: RegressionRule, compare: Callable[[float], RunComparison] | None
) -> list[GateResult]:
    """A regression rule, one result per evaluator it covers."""
    if compare is None:
        return [GateResult(str(rule), "skipped", "no baseline run (use --baseline)")]
    comparison = compare(rule.confidence)
    results = []
    for entry in comparison.evaluators:
        if rule.evaluators is not None and entry.name not in rule.evaluators:
            continue
        delta = entry.mean_difference if rule.metric == "mean" else entry.pass_rate_difference
        check = worse_by_more_than(
            delta, rule.margin, rule.confidence, label=f"{entry.name} {rule.metric}"
        )
        results.append(
            GateResult(
                f"{entry.name}: {rule}",
                "failed" if check.failed else "passed",
                check.explanation,
            )
        )
    return results


def check_all(
    gates: tuple[Gate, ...],
    regressions: tuple[RegressionRule, ...],
    summary: RunSummary,
    weights: Mapping[str, float],
    compare: Callable[[float], RunComparison] | None,
) -> list[GateResult]:
    """Every rule of a suite against one variant's run."""
    results = [check_gate(gate, summary, weights) for gate in gates]
    for rule in regressions:
        results.extend(check_regression(rule, compare))
    return results
