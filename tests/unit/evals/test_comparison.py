"""Comparing a candidate run with a baseline: pairing by item, verdicts that separate a
regression from noise, the worst items side by side, latency and cost, and the gate rule."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from scipy import stats as scipy_stats

from keel.core.eval_runs import ItemResult
from keel.core.evaluation import Verdict
from keel.core.stats import Estimate
from keel.evals.comparison import compare_runs, comparison_to_json, worse_by_more_than


def result(
    item: str,
    score: float | None,
    *,
    rep: int = 0,
    name: str = "quality",
    output: str | None = None,
    latency: float | None = 100.0,
    cost: float | None = 0.001,
) -> ItemResult:
    verdict = Verdict.failed("judge answer did not parse") if score is None else None
    return ItemResult(
        item_id=item,
        repetition=rep,
        output=output if output is not None else f"answer {item}",
        latency_ms=latency,
        cost_usd=cost,
        verdicts={name: verdict or Verdict(score or 0.0, (score or 0.0) >= 0.5)},
    )


def run(scores: dict[str, float | None], name: str = "quality") -> list[ItemResult]:
    return [result(item, s, name=name) for item, s in scores.items()]


BASELINE_SCORES = {
    f"q{n}": float(s) for n, s in enumerate(np.random.default_rng(7).uniform(0.55, 1.0, 60))
}


def test_items_are_paired_by_id_and_the_rest_are_listed() -> None:
    baseline = run({"a": 0.9, "b": 0.8, "c": 0.7})
    candidate = run({"b": 0.8, "c": 0.7, "d": 0.6})
    comparison = compare_runs(baseline, candidate)
    assert comparison.paired_items == 2
    assert comparison.only_in_baseline == ("a",)
    assert comparison.only_in_candidate == ("d",)
    assert comparison.evaluators[0].pass_pairs == 2


def test_a_real_drop_is_a_regression_and_fails_the_gate() -> None:
    noise = np.random.default_rng(8).normal(-0.08, 0.05, len(BASELINE_SCORES))
    candidate_scores = {
        item: min(1.0, max(0.0, s + d))
        for (item, s), d in zip(BASELINE_SCORES.items(), noise, strict=True)
    }
    comparison = compare_runs(run(BASELINE_SCORES), run(candidate_scores))
    ev = comparison.evaluators[0]
    differences = [candidate_scores[i] - BASELINE_SCORES[i] for i in BASELINE_SCORES]
    assert ev.verdict == "regressed"
    assert ev.mean_difference is not None and ev.mean_difference.high is not None
    assert ev.mean_difference.value == pytest.approx(np.mean(differences))
    assert ev.mean_difference.n == 60 and ev.mean_difference.high < 0
    assert ev.baseline_mean == pytest.approx(np.mean(list(BASELINE_SCORES.values())))
    gate = worse_by_more_than(ev.mean_difference, 0.02, 0.95, label="quality mean")
    assert gate.failed
    assert "quality mean" in gate.explanation and "below −0.02" in gate.explanation
    assert not worse_by_more_than(ev.mean_difference, 0.2).failed


def test_identical_runs_show_no_change_and_pass_the_gate() -> None:
    comparison = compare_runs(run(BASELINE_SCORES), run(BASELINE_SCORES))
    ev = comparison.evaluators[0]
    assert ev.verdict == "no significant change"
    assert ev.mean_difference is not None
    assert (ev.mean_difference.value, ev.mean_difference.low, ev.mean_difference.high) == (0, 0, 0)
    assert ev.mcnemar_p == 1.0
    assert not worse_by_more_than(ev.mean_difference, 0.0).failed
    assert comparison.regressed_items == ()


def test_noise_without_a_shift_is_no_significant_change() -> None:
    noise = np.random.default_rng(9).normal(0.0, 0.05, len(BASELINE_SCORES))
    candidate = {item: s + d for (item, s), d in zip(BASELINE_SCORES.items(), noise, strict=True)}
    ev = compare_runs(run(BASELINE_SCORES), run(candidate)).evaluators[0]
    assert ev.verdict == "no significant change"
    delta = ev.mean_difference
    assert delta is not None and delta.low is not None and delta.high is not None
    assert delta.low < 0 < delta.high


def test_evaluations_that_start_failing_are_caught_by_mcnemar() -> None:
    # The judge stops parsing on 15 items the baseline passed: the scores that remain are
    # unchanged, so only the pass/fail pairs can show the regression.
    baseline = {f"q{n}": 0.9 for n in range(40)}
    candidate: dict[str, float | None] = {
        item: None if n < 15 else 0.9 for n, item in enumerate(baseline)
    }
    ev = compare_runs(run(baseline), run(candidate)).evaluators[0]
    assert (ev.baseline_only_passed, ev.candidate_only_passed) == (15, 0)
    assert ev.mcnemar_p == pytest.approx(scipy_stats.binomtest(15, 15, 0.5).pvalue)
    assert ev.pairs == 25 and ev.pass_pairs == 40
    assert ev.mean_difference is not None and ev.mean_difference.value == 0
    assert ev.verdict == "regressed"
    assert any("McNemar" in reason for reason in ev.reasons)
    assert ev.pass_rate_difference is not None
    assert ev.pass_rate_difference.value == pytest.approx(-15 / 40)


def test_a_candidate_whose_every_task_call_failed_has_regressed() -> None:
    baseline = run({f"q{n}": 0.9 for n in range(30)})
    candidate = [ItemResult(f"q{n}", 0, None, error="model not found") for n in range(30)]
    comparison = compare_runs(baseline, candidate)
    ev = comparison.evaluators[0]
    assert (ev.name, ev.verdict, ev.baseline_only_passed, ev.pairs) == (
        "quality",
        "regressed",
        30,
        0,
    )
    assert comparison.regressed_items[0].candidate_error == "model not found"


def test_a_few_flips_either_way_are_not_significant() -> None:
    baseline = {f"q{n}": 0.9 if n % 2 else 0.1 for n in range(40)}
    candidate = dict(baseline)
    for item in ("q1", "q3", "q5"):
        candidate[item] = 0.1  # pass -> fail
    for item in ("q0", "q2"):
        candidate[item] = 0.9  # fail -> pass
    ev = compare_runs(run(baseline), run(candidate)).evaluators[0]
    assert (ev.baseline_only_passed, ev.candidate_only_passed) == (3, 2)
    assert ev.mcnemar_p == pytest.approx(scipy_stats.binomtest(3, 5, 0.5).pvalue)
    assert ev.verdict == "no significant change"


def test_a_real_gain_is_an_improvement() -> None:
    candidate = {item: min(1.0, s + 0.1) for item, s in BASELINE_SCORES.items()}
    ev = compare_runs(run(BASELINE_SCORES), run(candidate)).evaluators[0]
    assert ev.verdict == "improved"
    assert not worse_by_more_than(ev.mean_difference, 0.0).failed


def test_the_worst_items_come_first_with_both_outputs() -> None:
    baseline = [
        result("x", 0.9, output="Paris"),
        result("y", 0.6, output="Lyon"),
        result("z", 0.9, output="Nice"),
        result("w", 0.5, output="Metz"),
    ]
    candidate = [
        result("x", 0.4, output="London"),  # drop 0.5, pass -> fail
        result("y", 0.4, output="Lille"),  # drop 0.2, pass -> fail
        result("z", 0.7, output="Nantes"),  # drop 0.2, still passing
        result("w", 0.9, output="Metz"),  # better
    ]
    worst = compare_runs(baseline, candidate).regressed_items
    assert [i.item_id for i in worst] == ["x", "y", "z"]
    assert (worst[0].baseline_output, worst[0].candidate_output) == ("Paris", "London")
    assert worst[0].score_drop == pytest.approx(0.5) and worst[0].pass_drop == 1.0
    assert worst[0].evaluator == "quality"
    assert [i.item_id for i in compare_runs(baseline, candidate, top=1).regressed_items] == ["x"]


def test_repetitions_are_averaged_per_item_before_pairing() -> None:
    baseline = [result(f"q{n}", 0.8, rep=rep) for n in range(10) for rep in range(3)]
    candidate = [
        result(f"q{n}", s, rep=rep) for n in range(10) for rep, s in enumerate((0.5, 0.6, 0.7))
    ]
    ev = compare_runs(baseline, candidate).evaluators[0]
    assert ev.pairs == 10  # items, not 30 calls
    assert ev.mean_difference is not None and ev.mean_difference.value == pytest.approx(-0.2)


def test_latency_difference_is_the_median_of_paired_differences() -> None:
    base_latency = [100.0, 120.0, 90.0, 300.0, 110.0, 105.0, None]
    cand_latency = [130.0, 125.0, 100.0, 310.0, 190.0, None, 95.0]
    baseline = [result(f"q{n}", 0.9, latency=v) for n, v in enumerate(base_latency)]
    candidate = [result(f"q{n}", 0.9, latency=v) for n, v in enumerate(cand_latency)]
    latency = compare_runs(baseline, candidate).latency
    paired = [
        c - b
        for b, c in zip(base_latency, cand_latency, strict=True)
        if b is not None and c is not None
    ]
    assert latency.pairs == 5
    assert latency.median_difference_ms is not None
    assert latency.median_difference_ms.value == pytest.approx(np.median(paired))
    assert latency.baseline_p50_ms == pytest.approx(
        np.percentile([v for v in base_latency if v], 50)
    )


def test_an_unknown_cost_leaves_the_total_difference_unknown() -> None:
    baseline = [result(f"q{n}", 0.9, cost=0.002) for n in range(4)]
    candidate = [result(f"q{n}", 0.9, cost=None if n == 0 else 0.003) for n in range(4)]
    cost = compare_runs(baseline, candidate).cost
    assert (cost.baseline_total_usd, cost.candidate_total_usd) == pytest.approx((0.008, 0.009))
    assert (cost.baseline_unknown, cost.candidate_unknown) == (0, 1)
    assert cost.total_difference_usd is None  # 0.009 would understate the candidate
    assert cost.pairs == 3
    assert cost.mean_difference_usd is not None
    assert cost.mean_difference_usd.value == pytest.approx(0.001)
    known = compare_runs(baseline, baseline).cost
    assert known.total_difference_usd == pytest.approx(0.0)


def test_an_evaluator_in_one_run_only_is_not_compared() -> None:
    baseline = run({"a": 0.9, "b": 0.8})
    candidate = run({"a": 0.9, "b": 0.8}, name="new_check")
    verdicts = {e.name: e.verdict for e in compare_runs(baseline, candidate).evaluators}
    assert verdicts == {"quality": "not compared", "new_check": "not compared"}


def test_few_pairs_come_with_a_warning() -> None:
    comparison = compare_runs(run({"a": 0.9, "b": 0.8}), run({"a": 0.1, "b": 0.2}))
    assert comparison.notes and "only 2 paired items" in comparison.notes[0]


def test_the_comparison_is_plain_json_and_the_same_seed_gives_the_same_figures() -> None:
    candidate = {item: s - 0.05 for item, s in BASELINE_SCORES.items()}
    doc = comparison_to_json(compare_runs(run(BASELINE_SCORES), run(candidate), seed=3))
    assert json.loads(orjson.dumps(doc)) == doc
    assert doc == comparison_to_json(compare_runs(run(BASELINE_SCORES), run(candidate), seed=3))
    ev = doc["evaluators"]["quality"]
    assert ev["verdict"] == "regressed" and ev["mean_difference"]["method"] == "bootstrap"
    assert doc["regressed_items"][0]["changes"][0]["evaluator"] == "quality"


def interval(value: float, low: float, high: float, confidence: float = 0.95) -> Estimate:
    return Estimate(value, low, high, 200, confidence, "bootstrap")


def test_the_gate_fails_only_when_the_whole_interval_is_beyond_the_margin() -> None:
    assert worse_by_more_than(interval(-0.05, -0.08, -0.021), 0.02).failed
    # The estimate is a drop of 0.05, but a drop of 0.01 is still plausible: not shown.
    assert not worse_by_more_than(interval(-0.05, -0.09, -0.01), 0.02).failed
    assert not worse_by_more_than(interval(-0.05, -0.09, -0.02), 0.02).failed  # not below
    assert not worse_by_more_than(interval(0.03, 0.01, 0.05), 0.0).failed


def test_the_gate_refuses_an_interval_of_another_confidence_or_a_negative_margin() -> None:
    with pytest.raises(ValueError, match="90% confidence"):
        worse_by_more_than(interval(-0.05, -0.08, -0.03, confidence=0.9), 0.02, 0.95)
    with pytest.raises(ValueError, match="margin"):
        worse_by_more_than(interval(-0.05, -0.08, -0.03), -0.02)


def test_the_gate_cannot_fail_without_an_interval() -> None:
    check = worse_by_more_than(None, 0.02)
    assert not check.failed and "too few" in check.explanation
    one = Estimate(-0.5, None, None, 1, 0.95, "bootstrap")
    assert not worse_by_more_than(one, 0.02).failed
