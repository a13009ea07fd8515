"""Rollout assignment: sticky per unit, close to the weights, monotonic as weights grow."""

from __future__ import annotations

from keel.core.rollout import (
    LabelEvent,
    Target,
    assign,
    check_targets,
    rollback_point,
    rollout_salt,
)

UNITS = [f"user:{i}" for i in range(20_000)]


def served(weight: float) -> dict[str, int]:
    targets = (Target(8, weight), Target(7, 100 - weight))
    salt = rollout_salt("rag_qa", "production", targets)
    return {unit: assign(targets, salt, unit) for unit in UNITS}


def test_assignment_follows_the_weights_and_is_sticky() -> None:
    ten = served(10)
    share = sum(1 for v in ten.values() if v == 8) / len(UNITS)
    assert 0.09 < share < 0.11
    assert served(10) == ten


def test_raising_the_weight_only_moves_units_onto_the_new_version() -> None:
    ten, fifty = served(10), served(50)
    assert all(fifty[unit] == 8 for unit, version in ten.items() if version == 8)
    moved = sum(1 for unit in UNITS if ten[unit] == 7 and fifty[unit] == 8) / len(UNITS)
    assert 0.37 < moved < 0.43


def test_each_rollout_picks_its_own_first_units() -> None:
    def first(candidate: int) -> set[str]:
        targets = (Target(candidate, 10), Target(7, 90))
        salt = rollout_salt("rag_qa", "production", targets)
        return {u for u in UNITS if assign(targets, salt, u) == candidate}

    overlap = len(first(8) & first(9)) / len(first(8))
    assert overlap < 0.2  # independent draws overlap ~10%


def test_targets_are_checked() -> None:
    assert (
        check_targets((Target(8, 10), Target(7, 80))) == "the weights must add up to 100 (percent)"
    )
    assert check_targets((Target(8, 50), Target(8, 50))) == "each version may appear once"
    assert check_targets((Target(8, 10), Target(7, 90))) is None


def test_rolling_back_twice_goes_back_two_moves() -> None:
    def event(
        id_: int, action: str, before: int | None, after: int, undoes: int | None = None
    ) -> LabelEvent:
        return LabelEvent(id_, "p", "production", action,
                          None if before is None else (Target(before),), (Target(after),), 0.0,
                          undoes=undoes)  # fmt: skip

    events = [event(1, "set", None, 7), event(2, "set", 7, 8), event(3, "set", 8, 9)]
    point = rollback_point(events)
    assert point is not None and point.id == 3
    events.append(event(4, "rollback", 9, 8, undoes=3))
    point = rollback_point(events)
    assert point is not None and point.id == 2
    events.append(event(5, "rollback", 8, 7, undoes=2))
    point = rollback_point(events)
    assert point is not None and point.before is None  # nothing earlier than the first move
