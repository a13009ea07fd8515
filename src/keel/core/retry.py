"""Backoff arithmetic: exponential with full jitter, capped, honouring `Retry-After`."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from keel.core.deployments import RetryPolicy


def backoff_delay(
    policy: RetryPolicy, attempt: int, jitter: float, retry_after_s: float | None = None
) -> float:
    """Seconds to wait before try `attempt + 1` (attempt counts from 1).

    `jitter` is a uniform random number in [0, 1) supplied by the caller (full
    jitter spreads retries of many clients). A `Retry-After` from the upstream
    wins when it asks for longer, capped at `max_backoff_s` so one upstream
    cannot park a request for minutes.
    """
    ceiling = min(policy.max_backoff_s, policy.backoff_s * 2.0 ** (attempt - 1))
    delay = ceiling * jitter
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(delay, policy.max_backoff_s)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from `now` (epoch) that a `Retry-After` header asks for; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(seconds, 0.0) if seconds == seconds else None  # NaN guard
