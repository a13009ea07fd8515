"""Labels and gradual rollout: which version of a prompt a label gives to whom.

A label points at one version, or during a rollout at several with weights in
percent (`production: v8 10%, v7 90%`). The version being rolled out comes first.
A unit (the user, else the session, else the request) is hashed to a bucket in
[0, 100) with a salt of the prompt, the label and the candidate version; the first
target takes buckets [0, w1), the next [w1, w1 + w2) and so on. So a unit stays
on one version while the weights hold, raising the candidate's weight only moves
units onto it, and each new rollout picks its own first users.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

LATEST = "latest"  # the label every push moves; nobody sets it by hand
_SCALE = 100.0 / 2**64


@dataclass(frozen=True, slots=True)
class Target:
    """One version a label serves and the percentage of units it gets."""

    version: int
    weight: float = 100.0

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready mapping."""
        return {"version": self.version, "weight": self.weight}


def check_targets(targets: Sequence[Target]) -> str | None:
    """What is wrong with `targets` as a label's value, or None."""
    if not targets:
        return "a label needs at least one version"
    versions = [t.version for t in targets]
    if len(set(versions)) != len(versions):
        return "each version may appear once"
    if any(t.version < 1 for t in targets):
        return "versions are positive integers"
    if any(not 0 < t.weight <= 100 for t in targets):
        return "each weight must be more than 0 and at most 100 (percent)"
    if abs(sum(t.weight for t in targets) - 100.0) > 1e-6:
        return "the weights must add up to 100 (percent)"
    return None


def bucket(salt: str, unit: str) -> float:
    """Where `unit` falls in [0, 100) for `salt`; the same inputs always give the same bucket."""
    digest = hashlib.blake2b(f"{salt}\x00{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") * _SCALE


def rollout_salt(name: str, label: str, targets: Sequence[Target]) -> str:
    """The salt of a rollout: the prompt, the label and the version being rolled out."""
    return f"{name}\x00{label}\x00{targets[0].version}"


def assign(targets: Sequence[Target], salt: str, unit: str) -> int:
    """The version `unit` gets from a label with `targets` (see the module docstring)."""
    if len(targets) == 1:
        return targets[0].version
    point = bucket(salt, unit)
    edge = 0.0
    for target in targets:
        edge += target.weight
        if point < edge:
            return target.version
    return targets[-1].version


def describe(targets: Sequence[Target]) -> str:
    """`v8 10%, v7 90%`, or `v7` for a label on one version."""
    if len(targets) == 1:
        return f"v{targets[0].version}"
    return ", ".join(f"v{t.version} {t.weight:g}%" for t in targets)


@dataclass(frozen=True, slots=True)
class LabelEvent:
    """One move of a label: what it pointed at before and after, by whom, and why.

    `action` is set, rollback, rollout, promote, abort or push (the `latest` label);
    `undoes` is the id of the event a rollback reverted.
    """

    id: int
    name: str
    label: str
    action: str
    before: tuple[Target, ...] | None
    after: tuple[Target, ...]
    at: float
    actor: str | None = None
    undoes: int | None = None


def rollback_point(events: Sequence[LabelEvent]) -> LabelEvent | None:
    """The event a rollback of the label reverts: its newest move not reverted already.

    Rollbacks are walked past, so rolling back twice goes back two moves (v9 -> v8 -> v7).
    """
    reverted = {event.undoes for event in events if event.undoes is not None}
    for event in sorted(events, key=lambda e: e.id, reverse=True):
        if event.action == "rollback" or event.id in reverted:
            continue
        return event
    return None
