"""The span record: one step of a trace; a generation is a span with model, usage and cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keel.core.pricing import PriceTable, cost_usd
from keel.core.usage import Usage


@dataclass(slots=True)
class Attempt:
    """One try at one upstream deployment, with its outcome."""

    deployment: str
    provider: str
    model: str
    outcome: str  # "ok" or the error description
    status: int | None
    latency_ms: float
    retry_after_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return {
            "deployment": self.deployment,
            "provider": self.provider,
            "model": self.model,
            "outcome": self.outcome,
            "status": self.status,
            "latency_ms": round(self.latency_ms, 3),
            "retry_after_s": self.retry_after_s,
        }


@dataclass(slots=True)
class Span:
    """One span as stored. Times are Unix epoch seconds (floats).

    Trace attributes (user, session, tags, metadata) are carried on every span.
    `cost_usd` is None and `unpriced` True when no price was known for the model;
    `price` is the snapshot of the price used (USD per 1M tokens, by kind).
    `status` is "ok" or "error"; `status_code` the HTTP status returned to the caller.
    """

    trace_id: str
    span_id: str
    name: str
    kind: str
    start_time: float
    end_time: float
    parent_span_id: str | None = None
    status: str = "ok"
    status_code: int | None = None
    error: str | None = None
    # generation fields
    alias: str | None = None
    provider: str | None = None
    model: str | None = None
    deployment: str | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    unpriced: bool = False
    price: dict[str, float] | None = None
    ttft_ms: float | None = None
    stream: bool = False
    # trace attributes
    user_id: str | None = None
    session_id: str | None = None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    # payloads
    input: Any = None
    output: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)

    def price_with(self, prices: PriceTable, *names: str | None) -> None:
        """Set `usage`'s cost from the first of `names` with a price, or mark it unpriced."""
        if self.usage is None:
            return
        snapshot = prices.snapshot(*names)
        if snapshot is None:
            self.unpriced = True
            return
        self.price = snapshot
        self.cost_usd = cost_usd(self.usage, snapshot)

    @property
    def latency_ms(self) -> float:
        """Wall time from start to end in milliseconds."""
        return (self.end_time - self.start_time) * 1000.0
