"""Write transactions under contention: tried again when another writer won a race, and
serialised per key on PostgreSQL.

SQLite has one writer at a time: a transaction that read first may be refused the upgrade
to a write while another writes ("database is locked"), and is simply tried again.
PostgreSQL runs writers side by side, so work that numbers things (the next version of a
prompt or a dataset) first takes a transaction-scoped advisory lock on its key, and the
second writer waits instead of colliding.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

T = TypeVar("T")
TRIES = 5


def write(
    engine: Engine,
    work: Callable[[Connection], T],
    *,
    retry_on: tuple[type[Exception], ...] = (OperationalError,),
) -> T:
    """`work` in one transaction, tried again (up to `TRIES` times, backing off) on
    `retry_on`; the last failure is raised."""
    for attempt in range(TRIES):
        try:
            with engine.begin() as connection:
                return work(connection)
        except retry_on:
            if attempt == TRIES - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def lock(connection: Connection, key: str) -> None:
    """Hold `key` until the transaction ends (PostgreSQL; SQLite has one writer anyway)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
