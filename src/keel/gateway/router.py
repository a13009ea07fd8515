"""Which deployments serve a call, in which order: weighted choice, then fallback aliases."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from keel.core.deployments import Deployment, ModelAlias
from keel.core.errors import GatewayError
from keel.ports import Provider


@dataclass(frozen=True, slots=True)
class Target:
    """One deployment to try, with the provider object that reaches it."""

    alias: str
    deployment: Deployment
    provider: Provider


class Router:
    """Plans the order of deployments for an alias.

    Within an alias, deployments are ordered by weighted random sampling
    without replacement, so weight 3 vs 1 sends about 75% of first attempts to
    the first while the other remains the next in line. Fallback aliases follow,
    depth first, each alias at most once.
    """

    def __init__(
        self, aliases: Mapping[str, ModelAlias], providers: Mapping[str, Provider]
    ) -> None:
        self._aliases = dict(aliases)
        self._targets = {
            name: [Target(name, d, providers[d.name]) for d in alias.deployments]
            for name, alias in aliases.items()
        }

    def aliases(self) -> Mapping[str, ModelAlias]:
        """Every alias the router knows."""
        return self._aliases

    def plan(self, alias: str, random: Callable[[], float]) -> list[Target]:
        """The ordered targets for `alias`; GatewayError 404 when it is unknown."""
        if alias not in self._aliases:
            known = ", ".join(sorted(self._aliases)) or "none configured"
            raise GatewayError(
                404,
                f"The model '{alias}' does not exist on this gateway. Known models: {known}.",
                code="model_not_found",
                param="model",
            )
        ordered: list[Target] = []
        seen: set[str] = set()
        self._extend(alias, random, ordered, seen)
        return ordered

    def _extend(
        self, alias: str, random: Callable[[], float], out: list[Target], seen: set[str]
    ) -> None:
        if alias in seen or alias not in self._aliases:
            return
        seen.add(alias)
        out.extend(_weighted_order(self._targets[alias], random))
        for fallback in self._aliases[alias].fallbacks:
            self._extend(fallback, random, out, seen)


def _weighted_order(targets: list[Target], random: Callable[[], float]) -> list[Target]:
    if len(targets) == 1:
        return targets
    pool = list(targets)
    ordered = []
    while pool:
        total = sum(t.deployment.weight for t in pool)
        point = random() * total
        for index, target in enumerate(pool):
            point -= target.deployment.weight
            if point < 0 or index == len(pool) - 1:
                ordered.append(pool.pop(index))
                break
    return ordered
