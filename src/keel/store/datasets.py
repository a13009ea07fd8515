"""The dataset repository: immutable versions and their items, in SQL.

A version is one row of `dataset_versions` and a full copy of its items in
`dataset_items`, keyed by position, so reading a version is one range scan and nothing
ever updates a stored item. The next version number is the highest plus one, chosen in
the transaction that inserts it; pushes of one dataset take a transaction-scoped
advisory lock on PostgreSQL, so they queue instead of racing (on SQLite one writer
serialises them, and a push that still collides on the primary key is tried again).
Inside that transaction a push whose content hash equals the newest version's stores
nothing, so two identical pushes at once make one version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError

from keel.core.datasets import DatasetItem
from keel.core.evaluation import Document
from keel.ports import DatasetVersionInfo, NewDatasetVersion
from keel.store.schema import dataset_items_table, dataset_versions_table
from keel.store.transactions import lock, write

_VERSIONS = dataset_versions_table.c
_ITEMS = dataset_items_table.c
_INFO_FIELDS = (
    "name", "version", "item_count", "content_hash", "created_at", "author", "message", "source",
)  # fmt: skip


def _info(row: Mapping[Any, Any]) -> DatasetVersionInfo:
    return DatasetVersionInfo(**{name: row[name] for name in _INFO_FIELDS})


def _item(row: Mapping[Any, Any]) -> DatasetItem:
    return DatasetItem(
        id=row["item_id"],
        input=row["input"],
        expected=row["expected"],
        context=tuple(Document(d["id"], d["text"]) for d in row["context"] or ()),
        metadata=row["metadata"] or {},
    )


def _row(name: str, version: int, position: int, item: DatasetItem) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "position": position,
        "item_id": item.id,
        "input": item.input,
        "expected": item.expected,
        "context": [{"id": d.id, "text": d.text} for d in item.context] or None,
        "metadata": dict(item.metadata) or None,
    }


class DatasetStore:
    """`keel.ports.DatasetRepository` on a SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def latest_versions(self) -> list[DatasetVersionInfo]:
        newest = (
            select(_VERSIONS.name, func.max(_VERSIONS.version).label("version"))
            .group_by(_VERSIONS.name)
            .subquery()
        )
        query = (
            select(dataset_versions_table)
            .join(
                newest,
                (_VERSIONS.name == newest.c.name) & (_VERSIONS.version == newest.c.version),
            )
            .order_by(_VERSIONS.name)
        )
        with self._engine.connect() as connection:
            return [_info(row._mapping) for row in connection.execute(query)]

    def latest(self, name: str) -> DatasetVersionInfo | None:
        with self._engine.connect() as connection:
            return _latest(connection, name)

    def version(self, name: str, version: int) -> DatasetVersionInfo | None:
        query = select(dataset_versions_table).where(
            _VERSIONS.name == name, _VERSIONS.version == version
        )
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else _info(row._mapping)

    def versions(self, name: str) -> list[DatasetVersionInfo]:
        query = (
            select(dataset_versions_table).where(_VERSIONS.name == name).order_by(_VERSIONS.version)
        )
        with self._engine.connect() as connection:
            return [_info(row._mapping) for row in connection.execute(query)]

    def items(
        self, name: str, version: int, *, after: int = -1, limit: int | None = None
    ) -> list[tuple[int, DatasetItem]]:
        query = (
            select(dataset_items_table)
            .where(_ITEMS.name == name, _ITEMS.version == version, _ITEMS.position > after)
            .order_by(_ITEMS.position)
        )
        if limit is not None:
            query = query.limit(limit)
        with self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [(row["position"], _item(row)) for row in rows]

    def items_by_id(self, name: str, version: int, ids: Sequence[str]) -> dict[str, DatasetItem]:
        if not ids:
            return {}
        query = select(dataset_items_table).where(
            _ITEMS.name == name, _ITEMS.version == version, _ITEMS.item_id.in_(sorted(set(ids)))
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return {row["item_id"]: _item(row) for row in rows}

    def item_ids(self, name: str, version: int, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        query = select(_ITEMS.item_id).where(
            _ITEMS.name == name, _ITEMS.version == version, _ITEMS.item_id.in_(sorted(set(ids)))
        )
        with self._engine.connect() as connection:
            return set(connection.execute(query).scalars())

    def add_version(self, new: NewDatasetVersion, at: float) -> tuple[DatasetVersionInfo, bool]:
        # IntegrityError: another push took the number first; try again with the next.
        return write(
            self._engine,
            lambda connection: self._add_version(connection, new, at),
            retry_on=(IntegrityError, OperationalError),
        )

    def _add_version(
        self, connection: Connection, new: NewDatasetVersion, at: float
    ) -> tuple[DatasetVersionInfo, bool]:
        lock(connection, f"keel.dataset:{new.name}")
        latest = _latest(connection, new.name)
        if latest is not None and latest.content_hash == new.content_hash:
            return latest, False
        number = (latest.version if latest else 0) + 1
        info = DatasetVersionInfo(
            new.name, number, len(new.items), new.content_hash, at, new.author, new.message,
            new.source,
        )  # fmt: skip
        connection.execute(
            insert(dataset_versions_table), {name: getattr(info, name) for name in _INFO_FIELDS}
        )
        rows = [_row(new.name, number, position, item) for position, item in enumerate(new.items)]
        connection.execute(insert(dataset_items_table), rows)
        return info, True


def _latest(connection: Connection, name: str) -> DatasetVersionInfo | None:
    query = (
        select(dataset_versions_table)
        .where(_VERSIONS.name == name)
        .order_by(_VERSIONS.version.desc())
        .limit(1)
    )
    row = connection.execute(query).first()
    return None if row is None else _info(row._mapping)
