"""Comparing a candidate run with a baseline run, item by item, and the regression rule
CI gates apply to the result.

Results are paired by `item_id`; items found in only one run are counted and listed, not
paired. Each item is aggregated over its repetitions first (its mean score and pass rate,
see `keel.evals.summary`), so the unit of every interval is the paired item. Differences
are always candidate − baseline, so a negative score difference is a drop in quality.

Per evaluator:

- mean difference: paired percentile bootstrap interval over items scored in both runs;
- pass-rate difference: paired percentile bootstrap interval over items evaluated in both;
- McNemar's exact test on the discordant items, b = passed in the baseline and failed in
  the candidate, c = the reverse (with repetitions, an item passes when it passed in more
  than half of its repetitions);
- the verdict: "regressed" when the mean-difference interval lies below 0 or McNemar's
  test is significant at 1 − confidence with b > c; "improved" for the mirror image (a
  regression signal wins when the two disagree); "no significant change" otherwise;
  "not compared" when no item has the evaluator's verdict in both runs. Each test gives a
  false "regressed" at most (1 − confidence)/2 of the time when nothing changed, so the
  verdict does at most 1 − confidence.

Latency: the median of per-item paired differences (candidate − baseline) with a bootstrap
interval. Cost: the mean per-item difference over items whose cost is known in both runs,
and each run's total; an unknown cost is not $0, so the total difference is only given
when no cost is unknown in either run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from keel.core.eval_runs import ItemResult
from keel.core.stats import (
    RESAMPLES,
    Estimate,
    Statistic,
    estimate_to_json,
    mcnemar_exact,
    paired_bootstrap,
    percentile,
)
from keel.evals.summary import ItemVerdicts, item_verdicts

ComparisonVerdict = Literal["regressed", "improved", "no significant change", "not compared"]
SMALL_SAMPLE = 20  # below this many pairs, percentile bootstrap intervals run narrow


@dataclass(frozen=True, slots=True)
class EvaluatorComparison:
    """One evaluator, candidate against baseline, over the items both runs evaluated.

    `pairs` counts items scored in both runs (the mean difference rests on them),
    `pass_pairs` items evaluated in both (a failed evaluation counts as not passed).
    """

    name: str
    pairs: int
    baseline_mean: float | None
    candidate_mean: float | None
    mean_difference: Estimate | None
    pass_pairs: int
    baseline_pass_rate: float | None
    candidate_pass_rate: float | None
    pass_rate_difference: Estimate | None
    baseline_only_passed: int  # b: passed in the baseline, failed in the candidate
    candidate_only_passed: int  # c: failed in the baseline, passed in the candidate
    mcnemar_p: float | None
    verdict: ComparisonVerdict
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ItemChange:
    """How one evaluator judged one item in each run (means over repetitions)."""

    evaluator: str
    baseline_score: float | None
    candidate_score: float | None
    baseline_pass_rate: float
    candidate_pass_rate: float

    @property
    def score_drop(self) -> float | None:
        """baseline − candidate score; None when either run has no score for the item."""
        if self.baseline_score is None or self.candidate_score is None:
            return None
        return self.baseline_score - self.candidate_score

    @property
    def pass_drop(self) -> float:
        """baseline − candidate pass rate (1.0 for a plain pass → fail)."""
        return self.baseline_pass_rate - self.candidate_pass_rate


@dataclass(frozen=True, slots=True)
class RegressedItem:
    """An item that got worse, with both outputs side by side.

    `evaluator` is the evaluator with the largest drop; `changes` has every evaluator. The
    outputs (or task errors) are those of each run's first repetition of the item.
    """

    item_id: str
    evaluator: str
    score_drop: float | None
    pass_drop: float
    changes: tuple[ItemChange, ...]
    baseline_output: str | None
    candidate_output: str | None
    baseline_error: str | None
    candidate_error: str | None


@dataclass(frozen=True, slots=True)
class LatencyComparison:
    """Latency: median per-item paired difference; each run's p50 over all its calls."""

    pairs: int
    median_difference_ms: Estimate | None
    baseline_p50_ms: float | None
    candidate_p50_ms: float | None


@dataclass(frozen=True, slots=True)
class CostComparison:
    """Cost: mean per-item paired difference and each run's total over known costs."""

    pairs: int
    mean_difference_usd: Estimate | None
    baseline_total_usd: float | None
    candidate_total_usd: float | None
    baseline_unknown: int
    candidate_unknown: int
    total_difference_usd: float | None  # None when a cost is unknown in either run


@dataclass(frozen=True, slots=True)
class RunComparison:
    """A candidate run against a baseline run."""

    paired_items: int
    only_in_baseline: tuple[str, ...]
    only_in_candidate: tuple[str, ...]
    evaluators: tuple[EvaluatorComparison, ...]
    regressed_items: tuple[RegressedItem, ...]
    latency: LatencyComparison
    cost: CostComparison
    confidence: float
    resamples: int
    seed: int
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Bootstrap:
    """The bootstrap settings of one comparison; every interval uses the same seed."""

    confidence: float
    resamples: int
    seed: int

    def difference(
        self, candidate: Sequence[float], baseline: Sequence[float], statistic: Statistic = "mean"
    ) -> Estimate | None:
        return paired_bootstrap(
            candidate,
            baseline,
            statistic=statistic,
            confidence=self.confidence,
            resamples=self.resamples,
            rng=self.seed,
        )


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """The outcome of a gate rule: whether it failed and why, in words for the CI log."""

    failed: bool
    explanation: str


def compare_runs(
    baseline: Sequence[ItemResult],
    candidate: Sequence[ItemResult],
    *,
    confidence: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = 0,
    top: int = 10,
) -> RunComparison:
    """Compare `candidate` with `baseline` (see the module docstring for the statistics).

    The same seed gives the same intervals; `top` bounds the regressed items listed.
    """
    base_items = {r.item_id for r in baseline}
    cand_items = {r.item_id for r in candidate}
    # A failed task call fails every evaluator, including those only the other run shows.
    names = list(dict.fromkeys(n for r in [*baseline, *candidate] for n in r.verdicts))
    base_verdicts, cand_verdicts = item_verdicts(baseline, names), item_verdicts(candidate, names)
    boot = _Bootstrap(confidence, resamples, seed)
    evaluators = tuple(
        _compare_evaluator(name, base_verdicts.get(name, {}), cand_verdicts.get(name, {}), boot)
        for name in names
    )
    paired = base_items & cand_items
    notes = []
    if 0 < len(paired) < SMALL_SAMPLE:
        notes.append(
            f"only {len(paired)} paired items: bootstrap intervals are too narrow below "
            f"about {SMALL_SAMPLE}, read them as optimistic"
        )
    return RunComparison(
        paired_items=len(paired),
        only_in_baseline=tuple(sorted(base_items - cand_items)),
        only_in_candidate=tuple(sorted(cand_items - base_items)),
        evaluators=evaluators,
        regressed_items=_regressed_items(
            baseline, candidate, base_verdicts, cand_verdicts, paired, top
        ),
        latency=_compare_latency(baseline, candidate, boot),
        cost=_compare_cost(baseline, candidate, boot),
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        notes=tuple(notes),
    )


def worse_by_more_than(
    delta: Estimate | None, margin: float, confidence: float = 0.95, *, label: str = "score"
) -> RuleCheck:
    """The regression rule "not worse than the baseline by more than `margin`".

    `delta` is the two-sided interval of candidate − baseline at `confidence` (an
    evaluator's `mean_difference` or `pass_rate_difference`), `margin` is in the same
    units (score points). The rule fails exactly when the interval's upper bound is below
    −margin: then even the most favourable value the data allow is a drop larger than the
    margin. This is a one-sided test at level (1 − confidence)/2, so "at 95% confidence"
    fails the build only when we are at least 97.5% sure of the drop; it is the interval
    printed in the report, and with margin 0 it agrees with a "regressed" mean difference.
    Without an interval (no or one pair) nothing is shown, and the rule passes.
    """
    if margin < 0:
        raise ValueError(f"the margin must be 0 or more, got {margin}")
    pct = f"{confidence:.0%}"
    if delta is None or delta.high is None or delta.low is None:
        pairs = 0 if delta is None else delta.n
        return RuleCheck(
            False, f"{label}: {pairs} paired items, too few for an interval; nothing to judge"
        )
    if abs(delta.confidence - confidence) > 1e-9:
        raise ValueError(
            f"the interval was computed at {delta.confidence:.0%} confidence and the rule "
            f"asks for {pct}: compare the runs with confidence={confidence}"
        )
    shown = (
        f"{label}: candidate − baseline {delta.value:+.3f} "
        f"[{delta.low:+.3f}, {delta.high:+.3f}] ({pct} interval, {delta.n} items)"
    )
    if delta.high < -margin:
        return RuleCheck(
            True,
            f"{shown}: the upper bound is below −{margin:g}, so it is worse than the "
            f"baseline by more than {margin:g} at {pct} confidence",
        )
    return RuleCheck(
        False,
        f"{shown}: the upper bound is not below −{margin:g}, so it is not shown to be worse "
        f"than the baseline by more than {margin:g}",
    )


def comparison_to_json(comparison: RunComparison) -> dict[str, Any]:
    """A comparison as plain JSON, for the REST API and the CLI."""
    return {
        "paired_items": comparison.paired_items,
        "only_in_baseline": list(comparison.only_in_baseline),
        "only_in_candidate": list(comparison.only_in_candidate),
        "confidence": comparison.confidence,
        "resamples": comparison.resamples,
        "seed": comparison.seed,
        "notes": list(comparison.notes),
        "evaluators": {e.name: evaluator_comparison_to_json(e) for e in comparison.evaluators},
        "regressed_items": [regressed_item_to_json(i) for i in comparison.regressed_items],
        "latency_ms": {
            "pairs": comparison.latency.pairs,
            "median_difference": estimate_to_json(comparison.latency.median_difference_ms),
            "baseline_p50": comparison.latency.baseline_p50_ms,
            "candidate_p50": comparison.latency.candidate_p50_ms,
        },
        "cost_usd": {
            "pairs": comparison.cost.pairs,
            "mean_difference": estimate_to_json(comparison.cost.mean_difference_usd),
            "baseline_total": comparison.cost.baseline_total_usd,
            "candidate_total": comparison.cost.candidate_total_usd,
            "baseline_unknown": comparison.cost.baseline_unknown,
            "candidate_unknown": comparison.cost.candidate_unknown,
            "total_difference": comparison.cost.total_difference_usd,
        },
    }


def evaluator_comparison_to_json(comparison: EvaluatorComparison) -> dict[str, Any]:
    """One evaluator's comparison as plain JSON."""
    return {
        "verdict": comparison.verdict,
        "reasons": list(comparison.reasons),
        "pairs": comparison.pairs,
        "baseline_mean": comparison.baseline_mean,
        "candidate_mean": comparison.candidate_mean,
        "mean_difference": estimate_to_json(comparison.mean_difference),
        "pass_pairs": comparison.pass_pairs,
        "baseline_pass_rate": comparison.baseline_pass_rate,
        "candidate_pass_rate": comparison.candidate_pass_rate,
        "pass_rate_difference": estimate_to_json(comparison.pass_rate_difference),
        "baseline_only_passed": comparison.baseline_only_passed,
        "candidate_only_passed": comparison.candidate_only_passed,
        "mcnemar_p": comparison.mcnemar_p,
    }


def regressed_item_to_json(item: RegressedItem) -> dict[str, Any]:
    """A regressed item as plain JSON."""
    return {
        "item_id": item.item_id,
        "evaluator": item.evaluator,
        "score_drop": item.score_drop,
        "pass_drop": item.pass_drop,
        "baseline_output": item.baseline_output,
        "candidate_output": item.candidate_output,
        "baseline_error": item.baseline_error,
        "candidate_error": item.candidate_error,
        "changes": [
            {
                "evaluator": c.evaluator,
                "baseline_score": c.baseline_score,
                "candidate_score": c.candidate_score,
                "baseline_pass_rate": c.baseline_pass_rate,
                "candidate_pass_rate": c.candidate_pass_rate,
            }
            for c in item.changes
        ],
    }


def _compare_evaluator(
    name: str,
    baseline: Mapping[str, ItemVerdicts],
    candidate: Mapping[str, ItemVerdicts],
    boot: _Bootstrap,
) -> EvaluatorComparison:
    both = sorted(baseline.keys() & candidate.keys())
    scored = [
        (b, c)
        for b, c in ((baseline[i].mean_score, candidate[i].mean_score) for i in both)
        if b is not None and c is not None
    ]
    base_scores = [b for b, _ in scored]
    cand_scores = [c for _, c in scored]
    base_rates = [baseline[i].pass_rate for i in both]
    cand_rates = [candidate[i].pass_rate for i in both]
    b = sum(1 for i in both if baseline[i].passed and not candidate[i].passed)
    c = sum(1 for i in both if candidate[i].passed and not baseline[i].passed)
    mean_difference = boot.difference(cand_scores, base_scores)
    p = mcnemar_exact(b, c) if both else None
    verdict, reasons = _verdict(name, baseline, candidate, mean_difference, p, b, c, boot)
    return EvaluatorComparison(
        name=name,
        pairs=len(scored),
        baseline_mean=_mean(base_scores),
        candidate_mean=_mean(cand_scores),
        mean_difference=mean_difference,
        pass_pairs=len(both),
        baseline_pass_rate=_mean(base_rates),
        candidate_pass_rate=_mean(cand_rates),
        pass_rate_difference=boot.difference(cand_rates, base_rates),
        baseline_only_passed=b,
        candidate_only_passed=c,
        mcnemar_p=p,
        verdict=verdict,
        reasons=reasons,
    )


def _verdict(
    name: str,
    baseline: Mapping[str, ItemVerdicts],
    candidate: Mapping[str, ItemVerdicts],
    delta: Estimate | None,
    p: float | None,
    b: int,
    c: int,
    boot: _Bootstrap,
) -> tuple[ComparisonVerdict, tuple[str, ...]]:
    if p is None:
        if baseline and candidate:
            return "not compared", (f"no item has a verdict of {name} in both runs",)
        side = "baseline" if baseline else "candidate"
        return "not compared", (f"{name} has verdicts in the {side} run only",)
    worse: list[str] = []
    better: list[str] = []
    if delta is not None and delta.low is not None and delta.high is not None:
        shown = f"mean score {delta.value:+.3f} [{delta.low:+.3f}, {delta.high:+.3f}]"
        if delta.high < 0:
            worse.append(f"{shown}: the interval lies below 0")
        elif delta.low > 0:
            better.append(f"{shown}: the interval lies above 0")
    if p < 1 - boot.confidence:
        shown = f"McNemar p = {p:.3g}: {b} items went from pass to fail, {c} from fail to pass"
        (worse if b > c else better).append(shown)
    if worse:
        return "regressed", (*worse, *better)
    if better:
        return "improved", tuple(better)
    p_text = f"McNemar p = {p:.3g} ({b} pass → fail, {c} fail → pass)"
    return "no significant change", (
        f"the mean score interval includes 0 (or has too few pairs) and {p_text}",
    )


def _regressed_items(
    baseline: Sequence[ItemResult],
    candidate: Sequence[ItemResult],
    base_verdicts: Mapping[str, Mapping[str, ItemVerdicts]],
    cand_verdicts: Mapping[str, Mapping[str, ItemVerdicts]],
    paired: set[str],
    top: int,
) -> tuple[RegressedItem, ...]:
    ranked: list[tuple[tuple[float, float], str, ItemChange, list[ItemChange]]] = []
    for item_id in paired:
        changes = [
            ItemChange(name, b.mean_score, c.mean_score, b.pass_rate, c.pass_rate)
            for name in base_verdicts.keys() & cand_verdicts.keys()
            if (b := base_verdicts[name].get(item_id)) is not None
            and (c := cand_verdicts[name].get(item_id)) is not None
        ]
        if not changes:
            continue
        changes.sort(key=lambda ch: ch.evaluator)
        worst = max(changes, key=_drop_key)
        if _drop_key(worst) > (0.0, 0.0):
            ranked.append((_drop_key(worst), item_id, worst, changes))
    ranked.sort(key=lambda entry: (-entry[0][0], -entry[0][1], entry[1]))
    base_first, cand_first = _first_results(baseline), _first_results(candidate)
    return tuple(
        RegressedItem(
            item_id=item_id,
            evaluator=worst.evaluator,
            score_drop=worst.score_drop,
            pass_drop=worst.pass_drop,
            changes=tuple(changes),
            baseline_output=base_first[item_id].output,
            candidate_output=cand_first[item_id].output,
            baseline_error=base_first[item_id].error,
            candidate_error=cand_first[item_id].error,
        )
        for _, item_id, worst, changes in ranked[:top]
    )


def _drop_key(change: ItemChange) -> tuple[float, float]:
    # Largest score drop first, then pass → fail; an item without a score on one side
    # (a failed evaluation) ranks by its pass drop alone. Rounded so that drops equal but
    # for float noise (0.9 - 0.7 and 0.6 - 0.4) tie.
    return (round(change.score_drop or 0.0, 9), round(change.pass_drop, 9))


def _compare_latency(
    baseline: Sequence[ItemResult], candidate: Sequence[ItemResult], boot: _Bootstrap
) -> LatencyComparison:
    base, cand = _per_item(baseline, _latency), _per_item(candidate, _latency)
    both = sorted(base.keys() & cand.keys())
    return LatencyComparison(
        pairs=len(both),
        median_difference_ms=boot.difference(
            [cand[i] for i in both], [base[i] for i in both], statistic="median"
        ),
        baseline_p50_ms=percentile(_known(baseline, _latency), 50),
        candidate_p50_ms=percentile(_known(candidate, _latency), 50),
    )


def _compare_cost(
    baseline: Sequence[ItemResult], candidate: Sequence[ItemResult], boot: _Bootstrap
) -> CostComparison:
    base, cand = _per_item(baseline, _cost), _per_item(candidate, _cost)
    both = sorted(base.keys() & cand.keys())
    base_known, cand_known = _known(baseline, _cost), _known(candidate, _cost)
    base_total = sum(base_known) if base_known else None
    cand_total = sum(cand_known) if cand_known else None
    base_unknown, cand_unknown = len(baseline) - len(base_known), len(candidate) - len(cand_known)
    complete = base_unknown == 0 and cand_unknown == 0
    return CostComparison(
        pairs=len(both),
        mean_difference_usd=boot.difference([cand[i] for i in both], [base[i] for i in both]),
        baseline_total_usd=base_total,
        candidate_total_usd=cand_total,
        baseline_unknown=base_unknown,
        candidate_unknown=cand_unknown,
        total_difference_usd=(
            cand_total - base_total
            if complete and base_total is not None and cand_total is not None
            else None
        ),
    )


def _latency(result: ItemResult) -> float | None:
    return result.latency_ms


def _cost(result: ItemResult) -> float | None:
    return result.cost_usd


def _known(
    results: Sequence[ItemResult], field: Callable[[ItemResult], float | None]
) -> list[float]:
    return [float(v) for v in map(field, results) if v is not None]


def _per_item(
    results: Sequence[ItemResult], field: Callable[[ItemResult], float | None]
) -> dict[str, float]:
    """Per item, the mean of a field over the repetitions where it is known."""
    known: dict[str, list[float]] = {}
    for result in results:
        value = field(result)
        if value is not None:
            known.setdefault(result.item_id, []).append(float(value))
    return {item: sum(values) / len(values) for item, values in known.items()}


def _first_results(results: Sequence[ItemResult]) -> dict[str, ItemResult]:
    first: dict[str, ItemResult] = {}
    for result in sorted(results, key=lambda r: r.repetition, reverse=True):
        first[result.item_id] = result
    return first


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
