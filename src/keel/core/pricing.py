"""Prices per model and the cost of a usage; a model without a price is unpriced, never $0."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from keel.core.usage import Usage

_PER = 1_000_000.0
# Dated snapshots ("gpt-4o-mini-2024-07-18", "claude-sonnet-4-5-20250929") share the base price.
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per 1M tokens by kind. Cache prices default to the input price when unknown."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def snapshot(self) -> dict[str, float]:
        """The price as stored beside a usage, every kind filled in."""
        return {
            "input": self.input,
            "output": self.output,
            "cache_read": self.input if self.cache_read is None else self.cache_read,
            "cache_write": self.input if self.cache_write is None else self.cache_write,
        }


def cost_usd(usage: Usage, price: Mapping[str, float]) -> float:
    """Cost of `usage` at a price snapshot (as from `ModelPrice.snapshot`)."""
    uncached = max(usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens, 0)
    total = (
        uncached * price["input"]
        + usage.cache_read_tokens * price["cache_read"]
        + usage.cache_write_tokens * price["cache_write"]
        + usage.output_tokens * price["output"]
    )
    return total / _PER


class PriceTable:
    """Model name -> price, with overrides layered over the packaged list.

    Lookup tries the exact name, then the name without a `provider/` prefix,
    then without a date suffix. Results are memoised: the table is immutable.
    """

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self._prices = dict(prices)
        self._memo: dict[str, ModelPrice | None] = {}
        self._snapshots: dict[ModelPrice, dict[str, float]] = {}

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Mapping[str, float]]) -> PriceTable:
        """Build from `{"model": {"input": .., "output": .., "cache_read": ..}}`."""
        return cls({name: _price(name, fields) for name, fields in raw.items()})

    def with_overrides(self, overrides: Mapping[str, ModelPrice]) -> PriceTable:
        """A new table where `overrides` replace or add entries."""
        return PriceTable({**self._prices, **overrides})

    def names(self) -> Iterable[str]:
        """Every model name with a price."""
        return self._prices.keys()

    def snapshot(self, *names: str | None) -> dict[str, float] | None:
        """The price snapshot of the first of `names` that has a price (one dict per price,
        shared: spans store it as it is); None when none has."""
        price = self.lookup(*names)
        if price is None:
            return None
        snapshot = self._snapshots.get(price)
        if snapshot is None:
            snapshot = self._snapshots[price] = price.snapshot()
        return snapshot

    def lookup(self, *names: str | None) -> ModelPrice | None:
        """The price of the first of `names` that has one (e.g. upstream model, then alias)."""
        for name in names:
            if not name:
                continue
            if name not in self._memo:
                self._memo[name] = self._find(name)
            found = self._memo[name]
            if found is not None:
                return found
        return None

    def _find(self, name: str) -> ModelPrice | None:
        candidates = [name]
        if "/" in name:
            candidates.append(name.rsplit("/", 1)[1])
        for candidate in list(candidates):
            candidates.append(_DATE_SUFFIX.sub("", candidate))
        for candidate in candidates:
            price = self._prices.get(candidate)
            if price is not None:
                return price
        return None


def _price(name: str, fields: Mapping[str, float]) -> ModelPrice:
    try:
        return ModelPrice(
            input=float(fields["input"]),
            output=float(fields["output"]),
            cache_read=_opt(fields.get("cache_read")),
            cache_write=_opt(fields.get("cache_write")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"price of {name!r} needs numeric 'input' and 'output': {exc}") from exc


def _opt(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
