"""Model aliases and the upstream deployments behind them, as validated from keel.yaml."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Deployment:
    """One upstream endpoint that can serve an alias.

    `api_key` is the resolved secret (never written back anywhere);
    `key_ref` is what the config said (e.g. `env:OPENAI_API_KEY`) for display.
    """

    name: str  # unique label, e.g. "fast[0] openai/gpt-4o-mini@api.openai.com"
    provider: str
    model: str
    api_base: str | None = None
    api_key: str | None = None
    key_ref: str | None = None
    weight: float = 1.0
    timeout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class ModelAlias:
    """What clients send as `model`: deployments to balance across, then fallback aliases."""

    name: str
    deployments: tuple[Deployment, ...]
    fallbacks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per deployment and exponential backoff with full jitter, capped."""

    max_attempts: int = 3
    backoff_s: float = 0.2
    max_backoff_s: float = 8.0
