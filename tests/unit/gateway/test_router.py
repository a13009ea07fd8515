"""Deployment order: weighted choice within an alias, then fallbacks depth first, no cycles."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from keel.core.deployments import Deployment, ModelAlias
from keel.core.errors import GatewayError
from keel.gateway.router import Router


def _alias(name: str, weights: list[float], fallbacks: tuple[str, ...] = ()) -> ModelAlias:
    deployments = tuple(
        Deployment(name=f"{name}[{i}]", provider="openai", model=f"m{i}", weight=w)
        for i, w in enumerate(weights)
    )
    return ModelAlias(name, deployments, fallbacks)


def _router(*aliases: ModelAlias) -> Router:
    providers: dict[str, Any] = {d.name: object() for a in aliases for d in a.deployments}
    return Router({a.name: a for a in aliases}, providers)


def test_every_deployment_once_then_fallbacks_in_order() -> None:
    router = _router(
        _alias("fast", [3, 1], fallbacks=("smart", "cheap")),
        _alias("smart", [1], fallbacks=("fast",)),  # a cycle back to fast is ignored
        _alias("cheap", [1]),
    )
    plan = [t.deployment.name for t in router.plan("fast", random.Random(1).random)]
    assert sorted(plan[:2]) == ["fast[0]", "fast[1]"]
    assert plan[2:] == ["smart[0]", "cheap[0]"]


def test_first_choice_follows_weights() -> None:
    router = _router(_alias("mix", [3, 1]))
    rng = random.Random(42)
    firsts = Counter(router.plan("mix", rng.random)[0].deployment.name for _ in range(20_000))
    assert firsts["mix[0]"] / 20_000 == pytest.approx(0.75, abs=0.015)


def test_unknown_alias_is_a_404_listing_the_known_ones() -> None:
    with pytest.raises(GatewayError) as caught:
        _router(_alias("fast", [1])).plan("gpt-5", random.random)
    assert caught.value.status == 404 and caught.value.code == "model_not_found"
    assert "fast" in caught.value.message
