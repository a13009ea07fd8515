"""Eval statistics agree with scipy and numpy on fixed data, and the bootstrap is fast."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats as scipy_stats

from keel.core.stats import (
    bootstrap_interval,
    mcnemar_exact,
    mean_interval,
    paired_bootstrap,
    percentile,
    proportion_interval,
    t_quantile,
)


def data(seed: int = 20240605) -> np.random.Generator:
    """Fixed data: each test draws from its own seeded generator."""
    return np.random.default_rng(seed)


def scores(n: int) -> list[float]:
    return [float(x) for x in data(n).uniform(0, 1, n)]


@pytest.mark.parametrize("n", [2, 3, 7, 30, 250])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_mean_interval_is_scipys_student_t_interval(n: int, confidence: float) -> None:
    values = scores(n)
    est = mean_interval(values, confidence)
    low, high = scipy_stats.t.interval(
        confidence, n - 1, loc=np.mean(values), scale=scipy_stats.sem(values)
    )
    assert est is not None and est.low is not None and est.high is not None
    assert est.value == pytest.approx(np.mean(values), rel=1e-12)
    assert est.low == pytest.approx(low, rel=1e-9, abs=1e-12)
    assert est.high == pytest.approx(high, rel=1e-9, abs=1e-12)
    assert (est.n, est.confidence, est.method) == (n, confidence, "t")


def test_a_mean_of_nothing_is_none_and_of_one_value_has_no_interval() -> None:
    assert mean_interval([]) is None
    one = mean_interval([0.7])
    assert one is not None
    assert (one.value, one.low, one.high, one.n, one.has_interval) == (0.7, None, None, 1, False)


def test_identical_values_give_a_zero_width_interval() -> None:
    est = mean_interval([1.0, 1.0, 1.0])
    assert est is not None and (est.low, est.high) == (1.0, 1.0)


def test_t_quantiles_match_scipy_from_one_to_ten_million_degrees_of_freedom() -> None:
    for df in [*range(1, 120), 250, 999, 1000, 1001, 5000, 10**5, 10**7]:
        for p in (0.6, 0.9, 0.95, 0.975, 0.995, 0.9995):
            assert t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9)
            assert t_quantile(1 - p, df) == pytest.approx(-t_quantile(p, df), rel=1e-12)


@pytest.mark.parametrize(
    ("k", "n"), [(0, 1), (1, 1), (0, 20), (3, 20), (10, 20), (20, 20), (437, 1000)]
)
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_proportion_interval_is_scipys_wilson_interval(k: int, n: int, confidence: float) -> None:
    est = proportion_interval(k, n, confidence)
    ci = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert est is not None
    assert est.value == k / n
    assert est.low == pytest.approx(ci.low, abs=1e-12)
    assert est.high == pytest.approx(ci.high, abs=1e-12)


def test_a_proportion_of_nothing_is_none_and_impossible_counts_are_refused() -> None:
    assert proportion_interval(0, 0) is None
    with pytest.raises(ValueError, match="between 0 and n"):
        proportion_interval(5, 4)


def test_all_passed_still_leaves_room_below_one() -> None:
    est = proportion_interval(20, 20)
    assert est is not None and est.low is not None
    assert est.high == 1.0 and 0.8 < est.low < 0.9


def mc_tolerance(differences: np.ndarray, resamples: int) -> float:
    """Four standard errors of the gap between two independent percentile-bootstrap bounds.

    A bound is the 2.5% (97.5%) quantile of ~normal bootstrap means with spread
    se = sd / sqrt(n); the quantile's Monte-Carlo error is sqrt(q(1-q)/B) / density.
    """
    se = float(np.std(differences, ddof=1)) / math.sqrt(differences.size)
    density = scipy_stats.norm.pdf(1.96) / se
    one_bound = math.sqrt(0.025 * 0.975 / resamples) / density
    return 4 * math.sqrt(2) * one_bound


@pytest.mark.parametrize("n", [40, 200, 1000])
def test_paired_bootstrap_agrees_with_scipy_within_monte_carlo_noise(n: int) -> None:
    rng = data(n)
    baseline = rng.normal(0.7, 1.0, n)
    candidate = baseline + rng.normal(-0.1, 1.0, n)
    ours = paired_bootstrap(list(candidate), list(baseline), rng=11)
    theirs = scipy_stats.bootstrap(
        (candidate, baseline),
        lambda c, b, axis: np.mean(c - b, axis=axis),
        paired=True,
        vectorized=True,
        method="percentile",
        n_resamples=10_000,
        rng=np.random.default_rng(12),
    ).confidence_interval
    tolerance = mc_tolerance(candidate - baseline, 10_000)
    assert tolerance < 0.05 if n == 40 else tolerance <= 0.011
    assert ours is not None and ours.low is not None and ours.high is not None
    assert ours.value == pytest.approx(np.mean(candidate - baseline), rel=1e-12)
    assert abs(ours.low - theirs.low) < tolerance
    assert abs(ours.high - theirs.high) < tolerance


def test_bootstrap_of_the_median_agrees_with_scipy() -> None:
    values = data().normal(0.0, 1.0, 301)
    ours = bootstrap_interval(list(values), statistic="median", rng=3)
    theirs = scipy_stats.bootstrap(
        (values,), np.median, method="percentile", rng=np.random.default_rng(4)
    ).confidence_interval
    assert ours is not None and ours.low is not None and ours.high is not None
    assert ours.value == np.median(values)
    # The bootstrap median sits on order statistics ~0.01 apart here; allow a few of them.
    assert abs(ours.low - theirs.low) < 0.03
    assert abs(ours.high - theirs.high) < 0.03


def test_the_same_seed_gives_the_same_interval() -> None:
    values = scores(100)
    first = bootstrap_interval(values, rng=5)
    assert bootstrap_interval(values, rng=5) == first
    assert bootstrap_interval(values, rng=np.random.default_rng(5)) == first
    assert bootstrap_interval(values, rng=6) != first


def test_the_bootstrap_needs_two_values_for_an_interval() -> None:
    assert bootstrap_interval([]) is None
    one = bootstrap_interval([0.4])
    assert one is not None and (one.value, one.low, one.high) == (0.4, None, None)
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1.0, 2.0], [1.0])


def test_a_thousand_pairs_resampled_ten_thousand_times_take_well_under_a_second() -> None:
    baseline, candidate = list(data(1).normal(size=1000)), list(data(2).normal(size=1000))
    paired_bootstrap(candidate, baseline)  # warm up
    start = time.perf_counter()
    est = paired_bootstrap(candidate, baseline, resamples=10_000)
    elapsed = time.perf_counter() - start
    assert est is not None and est.has_interval
    assert elapsed < 1.0, f"{elapsed:.3f}s"


def test_mcnemar_is_scipys_two_sided_binomial_test_on_discordant_pairs() -> None:
    for b in range(31):
        for c in range(31):
            expected = 1.0 if b + c == 0 else scipy_stats.binomtest(b, b + c, 0.5).pvalue
            assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12, abs=1e-300)
    for b, c in [(0, 1000), (4900, 5100), (120, 80)]:
        assert mcnemar_exact(b, c) == pytest.approx(
            scipy_stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-10
        )


def test_no_discordant_pairs_means_no_evidence() -> None:
    assert mcnemar_exact(0, 0) == 1.0


def test_percentiles_are_numpys_linear_percentiles() -> None:
    latencies = [float(x) for x in data().lognormal(6, 0.5, 57)]
    for q in (0, 5, 50, 95, 99, 100):
        assert percentile(latencies, q) == pytest.approx(np.percentile(latencies, q), rel=1e-12)
    assert percentile([], 50) is None
    assert percentile([120.0, 80.0], 50) == 100.0


def test_nan_is_refused_rather_than_spread_into_every_figure() -> None:
    with pytest.raises(ValueError, match="finite"):
        mean_interval([0.5, float("nan")])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_interval([0.5, float("inf")])
