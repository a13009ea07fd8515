"""The packaged price list and the cost Keel records for a usage."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

import pytest

from keel.core.pricing import ModelPrice, PriceTable, cost_usd
from keel.core.usage import Usage, usage_from_openai

# Every model the gateway promises to price out of the box.
REQUIRED_MODELS = {
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-4o",
    "gpt-4o-mini",
    "o1",
    "o1-mini",
    "o3",
    "o3-mini",
    "o4-mini",
    "gpt-4-turbo",
    "gpt-3.5-turbo",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "claude-opus-4-1",
    "claude-opus-4",
    "claude-sonnet-4-5",
    "claude-sonnet-4",
    "claude-haiku-4-5",
    "claude-3-7-sonnet",
    "claude-3-5-sonnet",
    "claude-3-5-haiku",
    "claude-3-haiku",
    "claude-3-opus",
}


def _packaged_doc() -> dict[str, Any]:
    text = resources.files("keel.data").joinpath("prices.json").read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


@pytest.fixture(scope="module")
def raw_models() -> Mapping[str, Mapping[str, float]]:
    models: Mapping[str, Mapping[str, float]] = _packaged_doc()["models"]
    return models


@pytest.fixture(scope="module")
def table(raw_models: Mapping[str, Mapping[str, float]]) -> PriceTable:
    return PriceTable.from_mapping(raw_models)


def _price(table: PriceTable, name: str) -> ModelPrice:
    price = table.lookup(name)
    assert price is not None, f"{name} has no packaged price"
    return price


# -- the packaged list ---------------------------------------------------------------


def test_packaged_list_says_where_its_figures_come_from() -> None:
    comment = _packaged_doc()["_comment"]
    assert "USD per 1M tokens" in comment
    assert "2026-11-22" in comment


def test_every_packaged_entry_parses_and_every_promised_model_is_priced(
    raw_models: Mapping[str, Mapping[str, float]], table: PriceTable
) -> None:
    assert set(table.names()) == set(raw_models)
    missing = REQUIRED_MODELS - set(table.names())
    assert not missing, f"no packaged price for {sorted(missing)}"


def test_packaged_names_carry_no_date_suffix_or_provider_prefix(table: PriceTable) -> None:
    for name in table.names():
        assert "/" not in name, name
        assert not re.search(r"-(\d{4}-\d{2}-\d{2}|\d{8})$", name), name


def test_every_packaged_price_is_plausible(table: PriceTable) -> None:
    for name in table.names():
        price = _price(table, name)
        assert price.input > 0, name
        assert price.output >= 0, name
        if name.startswith("text-embedding-"):
            assert price.output == 0, name
        else:
            assert price.output > price.input, name
        # A cache hit is a discount; writing the cache costs at least the input price.
        if price.cache_read is not None:
            assert 0 < price.cache_read < price.input, name
        if name.startswith("claude-"):
            assert price.cache_write is not None, name
            assert price.cache_write > price.input, name
        else:
            assert price.cache_write is None, name


def test_anthropic_cache_prices_follow_the_published_multipliers(table: PriceTable) -> None:
    # 5-minute cache write = 1.25x input, cache hit = 0.1x input; Claude 3 Haiku is the
    # published exception (0.30 and 0.03 on a 0.25 input).
    for name in table.names():
        if not name.startswith("claude-") or name == "claude-3-haiku":
            continue
        price = _price(table, name)
        assert price.cache_write == pytest.approx(price.input * 1.25), name
        assert price.cache_read == pytest.approx(price.input * 0.1), name
    haiku3 = _price(table, "claude-3-haiku")
    assert (haiku3.cache_write, haiku3.cache_read) == (0.3, 0.03)


# -- the cost of a usage -------------------------------------------------------------


def test_gpt_4o_mini_cost_counts_cached_input_at_the_cached_price_and_reasoning_once(
    table: PriceTable,
) -> None:
    usage = usage_from_openai(
        {
            "prompt_tokens": 10_000,
            "completion_tokens": 2_000,
            "prompt_tokens_details": {"cached_tokens": 4_000},
            "completion_tokens_details": {"reasoning_tokens": 1_500},
        }
    )
    assert usage is not None
    price = _price(table, "gpt-4o-mini-2024-07-18")

    # 6,000 uncached x $0.15 + 4,000 cached x $0.075 + 2,000 output (reasoning inside) x $0.60
    assert cost_usd(usage, price.snapshot()) == pytest.approx(0.0024)


def test_claude_sonnet_4_5_cost_counts_cache_reads_and_cache_writes(table: PriceTable) -> None:
    usage = Usage(
        input_tokens=20_000,
        cache_read_tokens=12_000,
        cache_write_tokens=5_000,
        output_tokens=1_000,
        reasoning_tokens=400,
    )
    price = _price(table, "claude-sonnet-4-5-20250929")

    # 3,000 uncached x $3 + 12,000 read x $0.30 + 5,000 written x $3.75 + 1,000 output x $15
    assert cost_usd(usage, price.snapshot()) == pytest.approx(0.04635)


def test_embedding_cost_is_input_only(table: PriceTable) -> None:
    usage = usage_from_openai({"prompt_tokens": 1_000_000, "total_tokens": 1_000_000})
    assert usage is not None
    price = _price(table, "text-embedding-3-small")
    assert cost_usd(usage, price.snapshot()) == pytest.approx(0.02)


def test_cache_counts_larger_than_the_prompt_never_make_a_cost_negative() -> None:
    usage = Usage(input_tokens=100, cache_read_tokens=150, output_tokens=10)
    snapshot = ModelPrice(input=1.0, output=2.0, cache_read=0.5).snapshot()
    # Uncached input clamps at 0: 150 x $0.5 + 10 x $2.
    assert cost_usd(usage, snapshot) == pytest.approx(95 / 1_000_000)


# -- lookup --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "base"),
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("openai/gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic/claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
    ],
)
def test_dated_and_prefixed_names_resolve_to_the_base_price(
    table: PriceTable, requested: str, base: str
) -> None:
    assert table.lookup(requested) == _price(table, base)


def test_dated_suffix_does_not_fall_back_to_a_different_model(table: PriceTable) -> None:
    # Stripping the date must not turn gpt-4o-mini into gpt-4o (a 16x price difference).
    assert _price(table, "gpt-4o-mini-2024-07-18").input == 0.15


@pytest.mark.parametrize("name", ["my-private-model", "gpt-99", "anthropic/claude-next", ""])
def test_an_unknown_model_is_unpriced_not_free(table: PriceTable, name: str) -> None:
    assert table.lookup(name) is None


def test_lookup_with_no_usable_name_is_unpriced(table: PriceTable) -> None:
    assert table.lookup() is None
    assert table.lookup(None, "") is None


def test_lookup_falls_through_to_the_alias(table: PriceTable) -> None:
    # The upstream deployment name is unknown; the alias the client asked for is priced.
    assert table.lookup("my-azure-deployment", "gpt-4o") == _price(table, "gpt-4o")
    assert table.lookup(None, "claude-haiku-4-5") == _price(table, "claude-haiku-4-5")


def test_lookup_prefers_the_first_priced_name(table: PriceTable) -> None:
    assert table.lookup("gpt-4o", "gpt-4o-mini") == _price(table, "gpt-4o")


def test_overrides_win_and_leave_the_packaged_table_alone(table: PriceTable) -> None:
    negotiated = ModelPrice(input=0.1, output=0.4)
    custom = table.with_overrides({"gpt-4o-mini": negotiated, "acme-finetune": negotiated})

    assert custom.lookup("gpt-4o-mini-2024-07-18") == negotiated
    assert custom.lookup("openai/acme-finetune") == negotiated
    assert custom.lookup("claude-sonnet-4-5") == _price(table, "claude-sonnet-4-5")
    assert _price(table, "gpt-4o-mini").input == 0.15
    assert table.lookup("acme-finetune") is None


def test_an_override_applies_even_after_the_packaged_price_was_looked_up(
    table: PriceTable,
) -> None:
    assert _price(table, "o3").input == 2
    custom = table.with_overrides({"o3": ModelPrice(input=1.0, output=4.0)})
    assert _price(custom, "o3").input == 1.0


# -- snapshot ------------------------------------------------------------------------


def test_snapshot_fills_missing_cache_prices_with_the_input_price() -> None:
    assert ModelPrice(input=10.0, output=30.0).snapshot() == {
        "input": 10.0,
        "output": 30.0,
        "cache_read": 10.0,
        "cache_write": 10.0,
    }


def test_snapshot_keeps_known_cache_prices(table: PriceTable) -> None:
    assert _price(table, "claude-haiku-4-5").snapshot() == {
        "input": 1.0,
        "output": 5.0,
        "cache_read": 0.1,
        "cache_write": 1.25,
    }


def test_cached_tokens_on_a_model_without_a_cache_price_cost_the_input_price(
    table: PriceTable,
) -> None:
    usage = Usage(input_tokens=1_000, cache_read_tokens=400, output_tokens=0)
    snapshot = _price(table, "gpt-4-turbo").snapshot()
    assert cost_usd(usage, snapshot) == pytest.approx(1_000 * 10 / 1_000_000)


# -- invalid entries -----------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"output": 1.0},
        {"input": 1.0},
        {"input": "cheap", "output": 1.0},
        {"input": None, "output": 1.0},
        {"input": 1.0, "output": 2.0, "cache_read": "half"},
        {"input": 1.0, "output": 2.0, "cache_write": [3.75]},
        0.15,
    ],
)
def test_an_invalid_price_entry_raises_naming_the_model(fields: Any) -> None:
    with pytest.raises(ValueError, match="acme-broken"):
        PriceTable.from_mapping({"gpt-4o": {"input": 2.5, "output": 10.0}, "acme-broken": fields})
