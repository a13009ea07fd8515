"""The SDK's own warnings, rate-limited: a broken setup costs a log line a minute, not a flood.

Everything the SDK cannot do (reach the server, serialise an argument, run a mask
hook) is reported here instead of raised into the application.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("keel.sdk")

MUTE_S = 60.0


class LimitedLog:
    """Warnings at most once per `mute_s` per key, so a hot loop cannot flood the log."""

    __slots__ = ("_last", "mute_s")

    def __init__(self, mute_s: float = MUTE_S) -> None:
        self.mute_s = mute_s
        self._last: dict[str, float] = {}

    def warn(self, key: str, message: str, *args: object) -> bool:
        """Log `message % args` unless `key` was logged in the last `mute_s`; True if logged."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.mute_s:
            return False
        self._last[key] = now
        logger.warning(message, *args)
        return True

    def internal_error(self, where: str, exc: BaseException) -> None:
        """Report a failure inside the SDK that the application must not notice."""
        self.warn(
            f"internal:{where}",
            "keel: %s failed (%s: %s); the application is unaffected, the span may lack "
            "data. Repeats are muted for %.0f s.",
            where,
            type(exc).__name__,
            exc,
            self.mute_s,
        )
