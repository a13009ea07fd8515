"""The registry on SQLite and PostgreSQL: versions, includes, labels, rollback, audit."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import Engine

from keel.core.prompts import parse_document
from keel.core.rollout import Target
from keel.prompts.registry import (
    PromptNotFound,
    PromptRegistry,
    PushItem,
    RegistryConflict,
    RegistryError,
)
from keel.store.prompts import PromptStore


def item(name: str, text: str, **extra: Any) -> PushItem:
    document = {"name": name, "type": "text", "template": text, **extra}
    return PushItem(parse_document(document), source_path=f"prompts/{name}.yaml", git_commit="abc")


@pytest.fixture
def registry(engine: Engine) -> PromptRegistry:
    clock = iter(float(t) for t in range(1_000_000))
    return PromptRegistry(PromptStore(engine), clock=lambda: next(clock))


def test_identical_content_makes_no_new_version(registry: PromptRegistry) -> None:
    (first,) = registry.push([item("p", "Hello")], author="dana", message="first")
    (same,) = registry.push([item("p", "Hello")], author="dana", message="again")
    (second,) = registry.push([item("p", "Hello!")], author="lee", message="exclaim")
    assert (first.status, first.version) == ("created", 1)
    assert (same.status, same.version) == ("unchanged", 1)
    assert (second.status, second.version, second.previous) == ("created", 2, 1)
    versions = registry.versions("p")
    assert [(v.version, v.author, v.message, v.git_commit) for v in versions] == [
        (1, "dana", "first", "abc"),
        (2, "lee", "exclaim", "abc"),
    ]
    assert registry.labels("p") == {"latest": (Target(2),)}


def test_includes_are_pinned_and_a_changed_include_makes_a_new_version(
    registry: PromptRegistry,
) -> None:
    registry.push([item("style", "Be brief.")], author=None, message=None)
    registry.push([item("answer", "{% include 'style' %} Answer.")], author=None, message=None)
    assert registry.version("answer", 1).pins == {"style": 1}
    # Pushing both together: the include goes first, and the includer is pinned to it.
    outcomes = registry.push(
        [item("answer", "{% include 'style' %} Answer."), item("style", "Be very brief.")],
        author=None,
        message=None,
    )
    assert [(o.name, o.status, o.version) for o in outcomes] == [
        ("style", "created", 2),
        ("answer", "created", 2),
    ]
    assert registry.version("answer", 2).pins == {"style": 2}
    assert registry.version("answer", 1).pins == {"style": 1}  # v1 renders as it always did
    resolved = registry.resolve("answer", version=1)
    assert set(resolved.included) == {"style@1"}


def test_include_mistakes_are_refused(registry: PromptRegistry) -> None:
    with pytest.raises(PromptNotFound, match="'nope', which is not registered"):
        registry.push([item("a", "{% include 'nope' %}")], author=None, message=None)
    registry.push([item("needs", "{{ city }}", variables={"city": {}})], author=None, message=None)
    with pytest.raises(RegistryError, match="uses city; declare it"):
        registry.push([item("b", "{% include 'needs' %}")], author=None, message=None)
    with pytest.raises(RegistryError, match="include each other"):
        registry.push(
            [item("x", "{% include 'y' %}"), item("y", "{% include 'x' %}")],
            author=None,
            message=None,
        )
    assert registry.summaries()[0].name == "needs"  # nothing else was written


def test_labels_move_roll_back_and_roll_out(registry: PromptRegistry) -> None:
    for text in ("v1", "v2", "v3"):
        registry.push([item("p", text)], author=None, message=None)
    registry.set_label("p", "production", 1, actor="a")
    registry.set_label("p", "production", 2, actor="b")
    registry.set_label("p", "production", 3, actor="c")
    assert registry.rollback("p", "production", actor="d").after == (Target(2),)
    assert registry.rollback("p", "production", actor="d").after == (Target(1),)
    with pytest.raises(RegistryConflict, match="no earlier target"):
        registry.rollback("p", "production", actor="d")

    event = registry.rollout("p", "production", 3, 10, actor="e")
    assert event.after == (Target(3, 10), Target(1, 90))
    assert registry.rollout("p", "production", 3, 50, actor="e").after[0] == Target(3, 50)
    with pytest.raises(RegistryConflict, match="rolling out v3"):
        registry.rollout("p", "production", 2, 10, actor="e")
    with pytest.raises(RegistryConflict, match="is rolling out"):
        registry.version("p", "production")
    assert registry.abort("p", "production", actor="f").after == (Target(1),)
    registry.rollout("p", "production", 3, 10, actor="e")
    assert registry.promote("p", "production", actor="g").after == (Target(3),)
    with pytest.raises(RegistryConflict, match="no rollout to promote"):
        registry.promote("p", "production", actor="g")

    history = registry.history("p")
    moves = [e for e in history if e.action.startswith("prompt.label")]
    assert [e.action.rsplit(".", 1)[1] for e in moves] == [
        "set", "set", "set", "rollback", "rollback", "rollout", "rollout", "abort",
        "rollout", "promote",
    ]  # fmt: skip
    assert moves[3].actor == "d"
    assert moves[3].detail == {
        "label": "production",
        "from": [{"version": 3, "weight": 100.0}],
        "to": [{"version": 2, "weight": 100.0}],
    }
    assert [e.action for e in history if e.action == "prompt.push"] == ["prompt.push"] * 3


def test_bad_label_requests_name_what_is_wrong(registry: PromptRegistry) -> None:
    registry.push([item("p", "v1")], author=None, message=None)
    with pytest.raises(RegistryError, match="cannot be moved by hand"):
        registry.set_label("p", "latest", 1, actor=None)
    with pytest.raises(PromptNotFound, match="no version 4"):
        registry.set_label("p", "production", 4, actor=None)
    with pytest.raises(PromptNotFound, match="no prompt named 'q'"):
        registry.set_label("q", "production", 1, actor=None)
    with pytest.raises(PromptNotFound, match="no label 'production'"):
        registry.rollout("p", "production", 1, 10, actor=None)
    with pytest.raises(RegistryError, match="not a label name"):
        registry.set_label("p", "Prod Env", 1, actor=None)


def test_concurrent_pushes_get_distinct_versions(registry: PromptRegistry) -> None:
    errors: list[BaseException] = []

    def push(index: int) -> None:
        try:
            registry.push([item("p", f"text {index}")], author=None, message=None)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [v.version for v in registry.versions("p")] == [1, 2, 3, 4, 5, 6]
    assert registry.labels("p")["latest"] == (Target(6),)


def test_the_revision_grows_with_every_change(registry: PromptRegistry) -> None:
    start = registry.revision()
    registry.push([item("p", "v1")], author=None, message=None)
    pushed = registry.revision()
    registry.set_label("p", "production", 1, actor=None)
    assert start < pushed < registry.revision()
