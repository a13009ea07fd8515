"""A run's summary: errors are failures and never zeros, intervals are over items, unknown
costs are counted apart, and the JSON is plain."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from scipy import stats as scipy_stats

from keel.core.eval_runs import ItemResult
from keel.core.evaluation import Verdict
from keel.evals.summary import item_verdicts, summarize_run, summary_to_json


def result(
    item: str,
    *,
    rep: int = 0,
    score: float | None = 1.0,
    passed: bool | None = None,
    name: str = "accuracy",
    latency: float | None = 100.0,
    cost: float | None = 0.001,
    error: str | None = None,
) -> ItemResult:
    verdicts = {}
    if error is None:
        verdict = (
            Verdict.failed("judge answer did not parse")
            if score is None
            else Verdict(score, score >= 0.5 if passed is None else passed)
        )
        verdicts[name] = verdict
    return ItemResult(
        item_id=item,
        repetition=rep,
        output=None if error else f"answer to {item}",
        error=error,
        latency_ms=latency,
        cost_usd=cost,
        verdicts=verdicts,
    )


def test_a_failed_evaluation_is_an_error_and_a_failure_not_a_zero_score() -> None:
    results = [result("a", score=0.9), result("b", score=0.7), result("c", score=None)]
    summary = summarize_run(results).evaluators[0]
    assert (summary.name, summary.items, summary.evaluations, summary.errors) == (
        "accuracy",
        3,
        3,
        1,
    )
    assert summary.mean_score is not None
    assert summary.mean_score.value == pytest.approx(0.8)  # not (0.9 + 0.7 + 0) / 3
    assert summary.mean_score.n == 2
    assert summary.pass_rate is not None
    assert summary.pass_rate.value == pytest.approx(2 / 3)


def test_without_repetitions_the_intervals_are_t_and_wilson_over_items() -> None:
    values = [0.2, 0.9, 0.55, 0.7, 1.0, 0.35, 0.8, 0.6, 0.95, 0.1]
    summary = summarize_run([result(f"i{n}", score=s) for n, s in enumerate(values)])
    ev = summary.evaluators[0]
    t_low, t_high = scipy_stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=scipy_stats.sem(values)
    )
    assert ev.mean_score is not None
    assert (ev.mean_score.low, ev.mean_score.high) == pytest.approx((t_low, t_high))
    wilson = scipy_stats.binomtest(7, 10).proportion_ci(method="wilson")
    assert ev.pass_rate is not None
    assert (ev.pass_rate.low, ev.pass_rate.high) == pytest.approx((wilson.low, wilson.high))


def test_repetitions_are_averaged_per_item_and_the_interval_is_over_items() -> None:
    per_item = {"a": [0.9, 0.8, 1.0], "b": [0.2, 0.4, 0.3], "c": [0.6, 0.6, 0.6], "d": [1, 1, 1]}
    results = [
        result(item, rep=rep, score=float(s))
        for item, reps in per_item.items()
        for rep, s in enumerate(reps)
    ]
    summary = summarize_run(results)
    ev = summary.evaluators[0]
    means = [float(np.mean(reps)) for reps in per_item.values()]
    low, high = scipy_stats.t.interval(0.95, 3, loc=np.mean(means), scale=scipy_stats.sem(means))
    assert (summary.results, summary.items, summary.repetitions) == (12, 4, 3)
    assert ev.evaluations == 12
    assert ev.mean_score is not None and ev.mean_score.n == 4  # items, not 12 calls
    assert (ev.mean_score.low, ev.mean_score.high) == pytest.approx((low, high))
    assert ev.pass_rate is not None and ev.pass_rate.n == 4


def test_repeating_an_item_does_not_narrow_the_pass_rate_interval() -> None:
    once = [result(f"i{n}", score=1.0 if n % 2 else 0.0) for n in range(20)]
    five_times = [
        result(f"i{n}", rep=rep, score=1.0 if n % 2 else 0.0) for n in range(20) for rep in range(5)
    ]
    a = summarize_run(once).evaluators[0].pass_rate
    b = summarize_run(five_times).evaluators[0].pass_rate
    assert a is not None and b is not None
    assert (b.value, b.low, b.high, b.n) == (a.value, a.low, a.high, a.n)


def test_items_whose_pass_fail_differs_between_repetitions_are_flaky() -> None:
    results = [
        result("steady", rep=0, score=0.9),
        result("steady", rep=1, score=0.8),
        result("flaky", rep=0, score=0.9),
        result("flaky", rep=1, score=0.1),
        result("errs", rep=0, score=0.9),
        result("errs", rep=1, score=None),
    ]
    ev = summarize_run(results).evaluators[0]
    assert ev.flaky_items == ("errs", "flaky")
    assert item_verdicts(results)["accuracy"]["flaky"].pass_rate == 0.5


def test_a_failed_task_call_counts_as_a_failed_evaluation_of_every_evaluator() -> None:
    results = [result("a", score=1.0), result("b", error="upstream timed out", cost=None)]
    summary = summarize_run(results)
    ev = summary.evaluators[0]
    assert summary.task_errors == 1
    assert (ev.items, ev.evaluations, ev.errors) == (2, 2, 1)
    assert ev.pass_rate is not None and ev.pass_rate.value == 0.5


def test_an_evaluator_is_reported_even_when_every_task_call_failed() -> None:
    results = [result("a", error="upstream timed out"), result("b", error="upstream timed out")]
    assert summarize_run(results).evaluators == ()
    ev = summarize_run(results, evaluators=["accuracy"]).evaluators[0]
    assert (ev.name, ev.items, ev.errors, ev.mean_score) == ("accuracy", 2, 2, None)
    assert ev.pass_rate is not None and ev.pass_rate.value == 0.0


def test_latency_percentiles_are_over_every_call_with_a_known_latency() -> None:
    latencies = [120.0, 80.0, 95.0, 400.0, 101.0, None]
    summary = summarize_run([result(f"i{n}", latency=value) for n, value in enumerate(latencies)])
    known = [v for v in latencies if v is not None]
    assert summary.latency_p50_ms == pytest.approx(np.percentile(known, 50))
    assert summary.latency_p95_ms == pytest.approx(np.percentile(known, 95))
    assert summary.latency_known == 5


def test_an_unknown_cost_is_counted_apart_and_never_taken_as_zero() -> None:
    summary = summarize_run(
        [result("a", cost=0.002), result("b", cost=0.004), result("c", cost=None)]
    )
    assert summary.cost.total_usd == pytest.approx(0.006)
    assert summary.cost.mean_usd == pytest.approx(0.003)  # not 0.006 / 3
    assert (summary.cost.known, summary.cost.unknown) == (2, 1)
    nothing_known = summarize_run([result("a", cost=None)]).cost
    assert (nothing_known.total_usd, nothing_known.mean_usd) == (None, None)


def test_each_evaluator_is_summarised_under_its_own_name() -> None:
    results = [
        ItemResult(
            item_id=f"i{n}",
            repetition=0,
            output="x",
            verdicts={"exact": Verdict(float(n % 2), n % 2 == 1), "judge": Verdict(0.8, True)},
        )
        for n in range(6)
    ]
    summary = summarize_run(results)
    by_name = {e.name: e for e in summary.evaluators}
    assert set(by_name) == {"exact", "judge"}
    assert by_name["exact"].pass_rate is not None and by_name["exact"].pass_rate.value == 0.5
    assert by_name["judge"].pass_rate is not None and by_name["judge"].pass_rate.value == 1.0


def test_numpy_values_from_a_user_evaluator_count_like_python_ones() -> None:
    score = np.float64(0.75)
    verdict = Verdict(score=score, passed=score >= 0.5)  # type: ignore[arg-type]  # np.bool_
    ev = summarize_run([ItemResult("a", 0, "x", verdicts={"mine": verdict})]).evaluators[0]
    assert ev.pass_rate is not None and ev.pass_rate.value == 1.0
    assert ev.mean_score is not None and type(ev.mean_score.value) is float


def test_an_empty_run_summarises_to_nothing_known() -> None:
    summary = summarize_run([])
    assert (summary.results, summary.items, summary.evaluators) == (0, 0, ())
    assert summary.latency_p50_ms is None and summary.cost.total_usd is None


def test_the_summary_is_plain_json() -> None:
    results = [result(f"i{n}", rep=rep, score=0.1 * n) for n in range(8) for rep in range(2)]
    doc = summary_to_json(summarize_run(results))
    assert json.loads(orjson.dumps(doc)) == doc
    ev = doc["evaluators"]["accuracy"]
    assert set(ev["mean_score"]) == {"value", "low", "high", "n", "confidence", "method"}
    assert ev["mean_score"]["n"] == 8 and ev["mean_score"]["method"] == "t"
    assert "over items" in doc["intervals"]
    assert doc["cost_usd"]["unknown"] == 0
