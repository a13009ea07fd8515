"""Statistics for evaluation results: estimates with confidence intervals, the paired
bootstrap, McNemar's exact test and percentiles.

Every interval is two-sided at `confidence` (0.95 by default) and comes back as an
`Estimate`: the point value, the bounds, the number of observations it rests on and the
method. Nothing here reads a clock or global randomness: the bootstrap draws from the seed
or `numpy.random.Generator` it is given, so the same data and seed give the same interval.

Conventions, checked against scipy in the tests:

- `mean_interval`: Student-t interval, mean ± t(1 - α/2, n - 1) · s / √n with the sample
  standard deviation (ddof 1). No observations give None; one observation gives the value
  with no bounds (`low` and `high` None), since one value says nothing about spread.
- `proportion_interval`: Wilson score interval without continuity correction. It stays
  inside [0, 1] and is not degenerate at 0 or n successes.
- `bootstrap_interval` / `paired_bootstrap`: percentile bootstrap (10,000 resamples by
  default) of the mean (or median) of one sample; a paired comparison resamples the
  per-pair differences, which is the same as resampling the pairs. One observation gives
  no bounds. Percentile intervals are known to be too narrow on small samples (below ~20).
- `mcnemar_exact`: two-sided exact binomial test on the discordant pairs, p = min(1,
  2 · P(X <= min(b, c))) with X ~ Binomial(b + c, 1/2); no discordant pairs give p = 1.
- `percentile`: numpy's default (linear interpolation between the closest ranks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Statistic = Literal["mean", "median"]
Seed = int | np.random.Generator
Values = Sequence[float] | npt.NDArray[np.float64]

RESAMPLES = 10_000
_LARGE_DF = 1000  # above this the t quantile comes from its expansion in 1/df
_CHUNK = 1_000_000  # resampled values held in memory at once (8 MB of indices)


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate with its two-sided confidence interval.

    `low` and `high` are None when the data cannot give an interval (one observation).
    `n` is the number of independent units the interval rests on (items, or pairs of items).
    """

    value: float
    low: float | None
    high: float | None
    n: int
    confidence: float
    method: str

    @property
    def has_interval(self) -> bool:
        """True when both bounds are known."""
        return self.low is not None and self.high is not None


def estimate_to_json(estimate: Estimate | None) -> dict[str, Any] | None:
    """An estimate as plain JSON."""
    if estimate is None:
        return None
    return {
        "value": estimate.value,
        "low": estimate.low,
        "high": estimate.high,
        "n": estimate.n,
        "confidence": estimate.confidence,
        "method": estimate.method,
    }


def mean_interval(values: Values, confidence: float = 0.95) -> Estimate | None:
    """The mean with a Student-t interval; None without values, no bounds with one."""
    data = _finite(values)
    n = data.size
    if n == 0:
        return None
    mean = float(data.mean())
    if n == 1:
        return Estimate(mean, None, None, 1, confidence, "t")
    half = t_quantile(_upper(confidence), n - 1) * float(data.std(ddof=1)) / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n, confidence, "t")


def proportion_interval(successes: float, n: int, confidence: float = 0.95) -> Estimate | None:
    """A proportion with the Wilson score interval; None when n is 0.

    `successes` may be fractional (a sum of per-item pass rates, with items as the trials).
    """
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n ({n}), got {successes}")
    p = successes / n
    z = NormalDist().inv_cdf(_upper(confidence))
    z2n = z * z / n
    center = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    return Estimate(p, max(0.0, center - half), min(1.0, center + half), n, confidence, "wilson")


def bootstrap_interval(
    values: Values,
    *,
    statistic: Statistic = "mean",
    confidence: float = 0.95,
    resamples: int = RESAMPLES,
    rng: Seed = 0,
) -> Estimate | None:
    """The mean (or median) of `values` with a percentile bootstrap interval.

    None without values; one value gives no bounds. `rng` is a seed or a Generator.
    """
    data = _finite(values)
    n = data.size
    if n == 0:
        return None
    value = float(data.mean() if statistic == "mean" else np.median(data))
    if n == 1:
        return Estimate(value, None, None, 1, confidence, "bootstrap")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    generator = np.random.default_rng(rng)
    estimates = np.empty(resamples)
    rows = max(1, _CHUNK // n)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        sample = data[generator.integers(0, n, size=(stop - start, n))]
        estimates[start:stop] = (
            sample.mean(axis=1) if statistic == "mean" else np.median(sample, axis=1)
        )
    alpha = 100 * (1 - confidence) / 2
    low, high = np.percentile(estimates, [alpha, 100 - alpha])
    return Estimate(value, float(low), float(high), n, confidence, "bootstrap")


def paired_bootstrap(
    candidate: Values,
    baseline: Values,
    *,
    statistic: Statistic = "mean",
    confidence: float = 0.95,
    resamples: int = RESAMPLES,
    rng: Seed = 0,
) -> Estimate | None:
    """The mean (or median) of candidate − baseline over pairs, with a bootstrap interval."""
    if len(candidate) != len(baseline):
        raise ValueError(f"paired samples differ in length: {len(candidate)} != {len(baseline)}")
    differences = _finite(candidate) - _finite(baseline)
    return bootstrap_interval(
        differences, statistic=statistic, confidence=confidence, resamples=resamples, rng=rng
    )


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts `b` and `c`."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts cannot be negative")
    n, k = b + c, min(b, c)
    if n == 0 or b == c:
        return 1.0
    # P(X <= k) for X ~ Binomial(n, 1/2), summed exactly in integers.
    term = tail = 1
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / (1 << n))


def percentile(values: Values, q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None without values."""
    data = _finite(values)
    if data.size == 0:
        return None
    return float(np.percentile(data, q))


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t distribution with `df` degrees of freedom."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if p < 0.5:
        return -_t_upper_quantile(1 - p, df)
    return _t_upper_quantile(p, df)


@lru_cache(maxsize=1024)
def _t_upper_quantile(p: float, df: int) -> float:
    if p == 0.5:
        return 0.0
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    if df > _LARGE_DF:
        return _t_quantile_expansion(p, df)
    target = 1 - p
    # The t quantile lies above the normal one; double until bracketed, then
    # Newton on the upper tail, falling back to bisection when a step leaves the bracket.
    low = NormalDist().inv_cdf(p)
    high = 2 * low
    while _t_sf(high, df) > target:
        low, high = high, 2 * high
    t = low
    for _ in range(200):
        excess = _t_sf(t, df) - target
        if excess > 0:
            low = t
        else:
            high = t
        step = excess / _t_pdf(t, df)
        candidate = t + step
        if not low < candidate < high:
            candidate = (low + high) / 2
        if abs(candidate - t) <= 1e-15 * max(1.0, abs(t)):
            return candidate
        t = candidate
    return t


def _t_quantile_expansion(p: float, df: int) -> float:
    """Abramowitz & Stegun 26.7.5: the t quantile as the normal one plus powers of 1/df.

    Used for large df, where lgamma's cancellation would cost the series' accuracy.
    """
    z = NormalDist().inv_cdf(p)
    z2 = z * z
    g1 = z * (z2 + 1) / 4
    g2 = z * ((5 * z2 + 16) * z2 + 3) / 96
    g3 = z * (((3 * z2 + 19) * z2 + 17) * z2 - 15) / 384
    g4 = z * ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) / 92160
    return z + (g1 + (g2 + (g3 + g4 / df) / df) / df) / df


def _t_sf(t: float, df: int) -> float:
    """P(T > t) for t >= 0."""
    t2 = t * t
    return 0.5 * _betainc(df / 2, 0.5, df / (df + t2), t2 / (df + t2))


def _t_pdf(t: float, df: int) -> float:
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))


def _betainc(a: float, b: float, x: float, y: float) -> float:
    """The regularised incomplete beta function I_x(a, b), with y = 1 - x given exactly."""
    if x <= 0:
        return 0.0
    if y <= 0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
    log_front += b * math.log(y)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1 - math.exp(log_front) * _beta_fraction(b, a, y) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), by the modified Lentz method."""
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1) < 1e-16:
            break
    return result


def _upper(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return 1 - (1 - confidence) / 2


def _finite(values: Values) -> npt.NDArray[np.float64]:
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1:
        raise ValueError("expected a flat sequence of numbers")
    if not np.isfinite(data).all():
        raise ValueError("values must be finite numbers (no NaN or infinity)")
    return data
