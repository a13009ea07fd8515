"""Backoff: exponential with full jitter, capped; Retry-After wins when longer, also capped."""

from __future__ import annotations

import pytest

from keel.core.deployments import RetryPolicy
from keel.core.retry import backoff_delay, parse_retry_after

POLICY = RetryPolicy(max_attempts=5, backoff_s=0.2, max_backoff_s=8)


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.2), (2, 0.4), (3, 0.8), (7, 8.0)])
def test_delay_grows_exponentially_and_is_capped(attempt: int, ceiling: float) -> None:
    assert backoff_delay(POLICY, attempt, jitter=0.999999) == pytest.approx(ceiling, rel=1e-5)
    assert backoff_delay(POLICY, attempt, jitter=0.0) == 0.0


def test_retry_after_wins_when_longer_and_is_capped() -> None:
    assert backoff_delay(POLICY, 1, jitter=0.5, retry_after_s=2.0) == 2.0
    assert backoff_delay(POLICY, 1, jitter=0.5, retry_after_s=120.0) == 8.0
    assert backoff_delay(POLICY, 3, jitter=1.0, retry_after_s=0.1) == pytest.approx(0.8)


def test_retry_after_header_forms() -> None:
    assert parse_retry_after("3", now=0) == 3.0
    assert parse_retry_after("0.5", now=0) == 0.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after(None, now=0) is None
    assert parse_retry_after("nan", now=0) is None
