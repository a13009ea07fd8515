"""The prompt repository: versions, labels, label events and their audit events, in SQL.

Every write is one transaction that also appends its audit event, so the log
cannot miss a change. The next version number is the highest plus one; pushes of
one prompt take a transaction-scoped advisory lock on PostgreSQL, so they queue
instead of racing (on SQLite the one writer serialises them, and a push that
still collides on the primary key counts again). A
label move reads the label `FOR UPDATE` (PostgreSQL; SQLite has one writer), so
two moves cannot both start from the same state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from keel.core.audit import AuditEvent
from keel.core.prompts import PromptTemplate, PromptVersion, parse_document
from keel.core.rollout import LATEST, LabelEvent, Target
from keel.ports import LabelChange, NewVersion
from keel.store.schema import (
    audit_events_table,
    prompt_label_events_table,
    prompt_labels_table,
    prompt_versions_table,
)
from keel.store.transactions import lock, write

_VERSIONS = prompt_versions_table.c
_LABELS = prompt_labels_table.c
_EVENTS = prompt_label_events_table.c
_AUDIT = audit_events_table.c


def targets_json(targets: Sequence[Target] | None) -> list[dict[str, Any]] | None:
    """`[{version, weight}, ...]` for a JSON column."""
    return None if targets is None else [t.as_dict() for t in targets]


def _targets(raw: list[dict[str, Any]] | None) -> tuple[Target, ...] | None:
    if raw is None:
        return None
    return tuple(Target(int(t["version"]), float(t["weight"])) for t in raw)


_VERSION_FIELDS = (
    "name", "version", "content_hash", "created_at", "author", "message", "source_path",
    "git_commit",
)  # fmt: skip


def _version(row: Mapping[Any, Any], template: PromptTemplate | None = None) -> PromptVersion:
    """The version in a row of prompt_versions (`template`: its document, parsed already)."""
    return PromptVersion(
        template=template or parse_document(row["document"]),
        pins=dict(row["pins"]),
        **{name: row[name] for name in _VERSION_FIELDS},
    )


def _event(row: Any) -> LabelEvent:
    after = _targets(row.to_targets)
    assert after is not None
    return LabelEvent(
        id=row.id,
        name=row.name,
        label=row.label,
        action=row.action,
        before=_targets(row.from_targets),
        after=after,
        at=row.at,
        actor=row.actor,
        undoes=row.undoes,
    )


class PromptStore:
    """`keel.ports.PromptRepository` on a SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def latest(self, name: str) -> PromptVersion | None:
        query = (
            select(prompt_versions_table)
            .where(_VERSIONS.name == name)
            .order_by(_VERSIONS.version.desc())
            .limit(1)
        )
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else _version(row._mapping)

    def version(self, name: str, version: int) -> PromptVersion | None:
        query = select(prompt_versions_table).where(
            _VERSIONS.name == name, _VERSIONS.version == version
        )
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else _version(row._mapping)

    def versions(self, name: str) -> list[PromptVersion]:
        query = (
            select(prompt_versions_table).where(_VERSIONS.name == name).order_by(_VERSIONS.version)
        )
        with self._engine.connect() as connection:
            return [_version(row._mapping) for row in connection.execute(query)]

    def names(self) -> list[str]:
        query = select(_VERSIONS.name).distinct().order_by(_VERSIONS.name)
        with self._engine.connect() as connection:
            return list(connection.execute(query).scalars())

    def labels(self, name: str) -> dict[str, tuple[Target, ...]]:
        query = select(_LABELS.label, _LABELS.targets).where(_LABELS.name == name)
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        out = {}
        for label, raw in sorted(rows):
            targets = _targets(raw)
            assert targets is not None
            out[label] = targets
        return out

    def add_version(self, new: NewVersion, at: float) -> PromptVersion:
        # IntegrityError: another push took the number first; try again with the next.
        return write(
            self._engine,
            lambda connection: self._add_version(connection, new, at),
            retry_on=(IntegrityError, OperationalError),
        )

    def _add_version(self, connection: Connection, new: NewVersion, at: float) -> PromptVersion:
        name = new.template.name
        lock(connection, f"keel.prompt:{name}")
        highest = connection.execute(
            select(func.max(_VERSIONS.version)).where(_VERSIONS.name == name)
        ).scalar()
        number = (highest or 0) + 1
        row = {
            "name": name,
            "version": number,
            "type": new.template.type,
            "document": new.template.as_document(),
            "content_hash": new.content_hash,
            "pins": new.pins,
            "author": new.author,
            "message": new.message,
            "source_path": new.source_path,
            "git_commit": new.git_commit,
            "created_at": at,
        }
        connection.execute(insert(prompt_versions_table), row)
        self._audit(
            connection,
            AuditEvent(
                "prompt.push",
                name,
                at,
                new.author,
                {"version": number, "message": new.message, "content_hash": new.content_hash},
            ),
        )
        self._move(
            connection,
            name,
            LATEST,
            "push",
            lambda _before, _events: ((Target(number),), None),
            new.author,
            at,
        )
        return _version(row, new.template)

    def move_label(
        self, name: str, label: str, action: str, change: LabelChange, actor: str | None, at: float
    ) -> LabelEvent:
        with self._engine.begin() as connection:
            return self._move(connection, name, label, action, change, actor, at)

    def _move(
        self,
        connection: Connection,
        name: str,
        label: str,
        action: str,
        change: LabelChange,
        actor: str | None,
        at: float,
    ) -> LabelEvent:
        row = connection.execute(
            select(_LABELS.targets)
            .where(_LABELS.name == name, _LABELS.label == label)
            .with_for_update()
        ).first()
        before = None if row is None else _targets(row.targets)
        events = [
            _event(r)
            for r in connection.execute(
                select(prompt_label_events_table)
                .where(_EVENTS.name == name, _EVENTS.label == label)
                .order_by(_EVENTS.id)
            )
        ]
        after, undoes = change(before, events)
        values = {"targets": targets_json(after), "updated_at": at}
        if row is None:
            connection.execute(
                insert(prompt_labels_table), {"name": name, "label": label, **values}
            )
        else:
            connection.execute(
                update(prompt_labels_table)
                .where(_LABELS.name == name, _LABELS.label == label)
                .values(**values)
            )
        event_id = connection.execute(
            insert(prompt_label_events_table).returning(_EVENTS.id),
            {
                "name": name,
                "label": label,
                "action": action,
                "from_targets": targets_json(before),
                "to_targets": targets_json(after),
                "undoes": undoes,
                "actor": actor,
                "at": at,
            },
        ).scalar_one()
        if label != LATEST:
            detail = {"label": label, "from": targets_json(before), "to": targets_json(after)}
            self._audit(connection, AuditEvent(f"prompt.label.{action}", name, at, actor, detail))
        return LabelEvent(event_id, name, label, action, before, after, at, actor, undoes)

    def _audit(self, connection: Connection, event: AuditEvent) -> None:
        connection.execute(
            insert(audit_events_table),
            {
                "at": event.at,
                "actor": event.actor,
                "action": event.action,
                "target": event.target,
                "detail": event.detail,
            },
        )

    def audit_events(self, target: str | None = None, limit: int = 100) -> list[AuditEvent]:
        query = select(audit_events_table).order_by(_AUDIT.id.desc()).limit(limit)
        if target is not None:
            query = query.where(_AUDIT.target == target)
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        return [
            AuditEvent(r.action, r.target, r.at, r.actor, dict(r.detail or {}), r.id)
            for r in reversed(rows)
        ]

    def revision(self) -> int:
        with self._engine.connect() as connection:
            return int(connection.execute(select(func.max(_EVENTS.id))).scalar() or 0)
