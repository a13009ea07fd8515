"""The prompt registry's rules: push, labels, rollback, rollout, resolution, history.

Storage is behind `keel.ports.PromptRepository`; this module decides what a
change means. A push pins every include to a version (the newest, unless the
template pins one itself), skips a document identical to the newest version, and
orders a batch so that an included prompt is pushed before the prompts that
include it. `latest` follows pushes and cannot be moved by hand.

`on_change(name)` is called after every write, so the gateway's resolution cache
forgets the prompt at once in this process; other processes see the registry's
revision grow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from keel.core.audit import AuditEvent
from keel.core.prompts import (
    LABEL_PATTERN,
    NAME_PATTERN,
    PromptTemplate,
    PromptVersion,
    content_hash,
    split_reference,
)
from keel.core.rollout import (
    LATEST,
    LabelEvent,
    Target,
    check_targets,
    describe,
    rollback_point,
)
from keel.ports import NewVersion, PromptRepository
from keel.prompts.diff import diff_versions


class RegistryError(Exception):
    """A request the registry refuses; `status` is its HTTP status (404, 409, 422)."""

    status = 422
    title = "Invalid request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PromptNotFound(RegistryError):
    """An unknown prompt, version or label."""

    status = 404
    title = "Not Found"


class RegistryConflict(RegistryError):
    """A change that contradicts the registry's state (a rollout already running...)."""

    status = 409
    title = "Conflict"


@dataclass(frozen=True, slots=True)
class PushItem:
    """One document to push, with where it came from."""

    template: PromptTemplate
    source_path: str | None = None
    git_commit: str | None = None


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """What a push did (or, in a dry run, would do) with one document."""

    name: str
    status: str  # "created" or "unchanged"
    version: int
    previous: int | None
    diff: str
    source_path: str | None = None


@dataclass(frozen=True, slots=True)
class Resolved:
    """A label (or a version) resolved: the versions it serves and all they include."""

    name: str
    label: str | None
    targets: tuple[Target, ...]
    versions: dict[int, PromptVersion]
    included: dict[str, PromptVersion] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PromptSummary:
    """One prompt in the registry's list."""

    name: str
    type: str
    latest: int
    labels: dict[str, tuple[Target, ...]]
    tags: tuple[str, ...]
    updated_at: float


class PromptRegistry:
    """Prompt versions and labels with their rules."""

    def __init__(
        self,
        repository: PromptRepository,
        *,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self._repository = repository
        self._clock = clock
        self.on_change = on_change

    def revision(self) -> int:
        """Grows with every push and label move."""
        return self._repository.revision()

    # Reading

    def summaries(self) -> list[PromptSummary]:
        """Every prompt with its newest version and its labels."""
        out = []
        for name in self._repository.names():
            latest = self._repository.latest(name)
            if latest is None:
                continue
            out.append(
                PromptSummary(
                    name,
                    latest.template.type,
                    latest.version,
                    self._repository.labels(name),
                    latest.template.tags,
                    latest.created_at,
                )
            )
        return out

    def versions(self, name: str) -> list[PromptVersion]:
        """Every version of `name`, oldest first; PromptNotFound when there is none."""
        versions = self._repository.versions(name)
        if not versions:
            raise PromptNotFound(self._unknown(name))
        return versions

    def labels(self, name: str) -> dict[str, tuple[Target, ...]]:
        """Where each label of `name` points."""
        self._require(name)
        return self._repository.labels(name)

    def version(self, name: str, selector: str | int) -> PromptVersion:
        """The version `selector` names: a number, or a label on one version."""
        if isinstance(selector, int) or selector.isdigit():
            number = int(selector)
            found = self._repository.version(name, number)
            if found is None:
                self._require(name)
                raise PromptNotFound(f"prompt {name!r} has no version {number}")
            return found
        targets = self._label(name, selector)
        if len(targets) > 1:
            raise RegistryConflict(
                f"label {selector!r} of {name!r} is rolling out ({describe(targets)}); "
                "name a version"
            )
        return self.version(name, targets[0].version)

    def resolve(
        self, name: str, *, label: str | None = None, version: int | None = None
    ) -> Resolved:
        """Everything needed to render `name` by label (default production) or version."""
        if version is not None:
            found = self.version(name, version)
            return Resolved(name, None, (Target(found.version),), {found.version: found},
                            self._included(found))  # fmt: skip
        label = label or "production"
        targets = self._label(name, label)
        versions: dict[int, PromptVersion] = {}
        included: dict[str, PromptVersion] = {}
        for target in targets:
            found = self.version(name, target.version)
            versions[target.version] = found
            included.update(self._included(found))
        return Resolved(name, label, targets, versions, included)

    def history(self, name: str, limit: int = 500) -> list[AuditEvent]:
        """Pushes and label moves of `name`, oldest first."""
        self._require(name)
        return self._repository.audit_events(name, limit)

    def audit_events(self, target: str | None = None, limit: int = 100) -> list[AuditEvent]:
        """The audit log, oldest first of the newest `limit` (of one target, if given)."""
        return self._repository.audit_events(target, limit)

    def diff(self, name: str, a: str, b: str) -> str:
        """A unified diff of two versions (numbers or labels): templates and config."""
        return diff_versions(self.version(name, a), self.version(name, b))

    # Writing

    def push(
        self,
        items: Sequence[PushItem],
        *,
        author: str | None,
        message: str | None,
        dry_run: bool = False,
    ) -> list[PushOutcome]:
        """Register each changed document as a new version (none in a dry run)."""
        names = [item.template.name for item in items]
        duplicate = {name for name in names if names.count(name) > 1}
        if duplicate:
            raise RegistryError(f"the push holds {sorted(duplicate)[0]!r} more than once")
        outcomes = []
        planned: dict[str, PromptVersion] = {}  # a dry run's would-be versions
        for item in _dependency_order(items):
            template = item.template
            pins = self._pins(template, planned)
            digest = content_hash(template, pins)
            latest = self._repository.latest(template.name)
            if latest is not None and latest.content_hash == digest:
                outcomes.append(
                    PushOutcome(template.name, "unchanged", latest.version, latest.version, "",
                                item.source_path)
                )  # fmt: skip
                continue
            if dry_run:
                number = (latest.version if latest else 0) + 1
                created = PromptVersion(template.name, number, template, digest, pins,
                                        self._clock(), author, message)  # fmt: skip
                planned[template.name] = created
            else:
                candidate = NewVersion(
                    template, digest, pins, author, message, item.source_path, item.git_commit
                )
                created = self._repository.add_version(candidate, self._clock())
                self._changed(template.name)
            outcomes.append(
                PushOutcome(
                    template.name,
                    "created",
                    created.version,
                    latest.version if latest else None,
                    diff_versions(latest, created),
                    item.source_path,
                )
            )
        return outcomes

    def set_label(self, name: str, label: str, version: int, *, actor: str | None) -> LabelEvent:
        """Point `label` at `version` (ending any rollout on it)."""
        self._check_label(label)
        self.version(name, version)
        return self._move(name, label, "set", lambda _b, _e: ((Target(version),), None), actor)

    def rollback(self, name: str, label: str, *, actor: str | None) -> LabelEvent:
        """Move `label` back to where it pointed before its last move."""
        self._check_label(label)
        self._label(name, label)

        def change(
            before: tuple[Target, ...] | None, events: Sequence[LabelEvent]
        ) -> tuple[tuple[Target, ...], int | None]:
            point = rollback_point(events)
            if point is None or point.before is None:
                raise RegistryConflict(
                    f"label {label!r} of {name!r} has no earlier target to roll back to"
                )
            return point.before, point.id

        return self._move(name, label, "rollback", change, actor)

    def rollout(
        self, name: str, label: str, version: int, weight: float, *, actor: str | None
    ) -> LabelEvent:
        """Give `version` `weight` percent of `label`'s units; the rest stay where they are."""
        self._check_label(label)
        self.version(name, version)
        if not 0 < weight <= 100:
            raise RegistryError("the weight is a percentage: more than 0, at most 100")

        def change(
            before: tuple[Target, ...] | None, _events: Sequence[LabelEvent]
        ) -> tuple[tuple[Target, ...], int | None]:
            if before is None:
                raise PromptNotFound(f"prompt {name!r} has no label {label!r} to roll out on")
            if len(before) > 1 and before[0].version != version:
                raise RegistryConflict(
                    f"label {label!r} of {name!r} is rolling out v{before[0].version} "
                    f"({describe(before)}); promote or abort it first"
                )
            base = before[-1].version
            if base == version:
                raise RegistryConflict(f"label {label!r} of {name!r} serves v{version} already")
            if weight == 100:
                return (Target(version),), None
            targets = (Target(version, weight), Target(base, 100 - weight))
            problem = check_targets(targets)
            if problem:
                raise RegistryError(problem)
            return targets, None

        return self._move(name, label, "rollout", change, actor)

    def promote(self, name: str, label: str, *, actor: str | None) -> LabelEvent:
        """End the rollout on `label`: the new version takes every unit."""
        return self._finish(name, label, "promote", actor)

    def abort(self, name: str, label: str, *, actor: str | None) -> LabelEvent:
        """End the rollout on `label`: every unit goes back to the version it rolls out from."""
        return self._finish(name, label, "abort", actor)

    def _finish(self, name: str, label: str, action: str, actor: str | None) -> LabelEvent:
        self._check_label(label)
        self._label(name, label)

        def change(
            before: tuple[Target, ...] | None, _events: Sequence[LabelEvent]
        ) -> tuple[tuple[Target, ...], int | None]:
            if before is None or len(before) < 2:
                raise RegistryConflict(f"label {label!r} of {name!r} has no rollout to {action}")
            keep = before[0] if action == "promote" else before[-1]
            return (Target(keep.version),), None

        return self._move(name, label, action, change, actor)

    # Helpers

    def _move(
        self,
        name: str,
        label: str,
        action: str,
        change: Callable[
            [tuple[Target, ...] | None, Sequence[LabelEvent]],
            tuple[tuple[Target, ...], int | None],
        ],
        actor: str | None,
    ) -> LabelEvent:
        event = self._repository.move_label(name, label, action, change, actor, self._clock())
        self._changed(name)
        return event

    def _changed(self, name: str) -> None:
        if self.on_change is not None:
            self.on_change(name)

    def _require(self, name: str) -> None:
        if self._repository.latest(name) is None:
            raise PromptNotFound(self._unknown(name))

    def _unknown(self, name: str) -> str:
        if not NAME_PATTERN.match(name):
            return f"{name!r} is not a prompt name"
        return f"no prompt named {name!r}; `keel prompts list` shows the registered ones"

    def _label(self, name: str, label: str) -> tuple[Target, ...]:
        labels = self.labels(name)
        if label not in labels:
            listed = ", ".join(labels) or "none"
            raise PromptNotFound(f"prompt {name!r} has no label {label!r} (labels: {listed})")
        return labels[label]

    def _check_label(self, label: str) -> None:
        if label == LATEST:
            raise RegistryError("`latest` follows every push; it cannot be moved by hand")
        if not LABEL_PATTERN.match(label):
            raise RegistryError(
                f"{label!r} is not a label name: lowercase letters, digits, '_', '.', '-'"
            )

    def _pins(self, template: PromptTemplate, planned: dict[str, PromptVersion]) -> dict[str, int]:
        """The version each include of `template` is pinned to: the one it names, else the
        newest (in a dry run, the version an earlier document of the push would get)."""
        pins = {}
        for reference in template.includes():
            name, number = split_reference(reference)
            if number is None:
                found = planned.get(name) or self._repository.latest(name)
                if found is None:
                    raise PromptNotFound(
                        f"{template.name} includes {name!r}, which is not registered; "
                        "push it first (or in the same push)"
                    )
            else:
                found = self._repository.version(name, number)
                if found is None:
                    raise PromptNotFound(
                        f"{template.name} includes {reference!r}, which does not exist"
                    )
            self._check_include(template, reference, found.template)
            pins[reference] = found.version
        return pins

    def _check_include(
        self, template: PromptTemplate, reference: str, included: PromptTemplate
    ) -> None:
        if included.type != "text":
            raise RegistryError(
                f"{template.name} includes {reference!r}, a chat prompt; only text prompts "
                "can be included"
            )
        missing = set(included.variables) - set(template.variables)
        if missing:
            raise RegistryError(
                f"{template.name} includes {reference!r}, which uses "
                f"{', '.join(sorted(missing))}; declare {'them' if len(missing) > 1 else 'it'} "
                f"under variables of {template.name} too"
            )

    def _included(self, version: PromptVersion) -> dict[str, PromptVersion]:
        out: dict[str, PromptVersion] = {}
        stack = [version]
        while stack:
            current = stack.pop()
            for reference, number in current.pins.items():
                name, _ = split_reference(reference)
                ref = f"{name}@{number}"
                if ref in out:
                    continue
                found = self._repository.version(name, number)
                if found is None:  # versions are never deleted; a missing one is a bug
                    raise PromptNotFound(f"{version.ref} includes {ref}, which is missing")
                out[ref] = found
                stack.append(found)
        return out


def _dependency_order(items: Sequence[PushItem]) -> list[PushItem]:
    """Items ordered so that one included by another (by bare name) comes first."""
    by_name = {item.template.name: item for item in items}
    ordered: list[PushItem] = []
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join((*path, name))
            raise RegistryError(f"prompts include each other: {cycle}")
        state[name] = "visiting"
        for reference in by_name[name].template.includes():
            included, number = split_reference(reference)
            if number is None and included in by_name:
                visit(included, (*path, name))
        state[name] = "done"
        ordered.append(by_name[name])

    for name in by_name:
        visit(name, ())
    return ordered
