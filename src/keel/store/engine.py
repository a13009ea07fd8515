"""Engines from a database URL: SQLite tuned for one batched writer, PostgreSQL on psycopg 3."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import ConnectionPoolEntry

SQLITE_BUSY_TIMEOUT_MS = 5_000


def json_dumps(value: Any) -> str:
    """Serialise JSON columns with orjson (already sanitised values; see keel.store.writer)."""
    return orjson.dumps(value).decode()


# SQLite's default page cache (2 MB) is smaller than the random-key indexes (span id,
# trace id) of a few hundred thousand spans, so every insert read their pages back from
# the OS; 16 MB per connection kept the recording process ahead of sustained load.
SQLITE_CACHE_KIB = 16 * 1024


def create_engine_for(url: str) -> Engine:
    """An engine for `sqlite:///path` or `postgresql://…` (rewritten to the psycopg 3 driver)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend in ("postgresql", "postgres"):
        return _postgresql_engine(parsed)
    raise ValueError(
        f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
        "use sqlite:///path/to/keel.db or postgresql://user@host:5432/dbname"
    )


def _sqlite_engine(url: URL) -> Engine:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        json_serializer=json_dumps,
        json_deserializer=orjson.loads,
    )
    event.listen(engine, "connect", _sqlite_on_connect)
    return engine


def _sqlite_on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
    # WAL lets readers (dashboard, API) run while the writer thread commits;
    # NORMAL is durable across application crashes in WAL mode and avoids an
    # fsync per commit. The pragmas are per connection, hence the event.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _postgresql_engine(url: URL) -> Engine:
    if url.drivername in ("postgresql", "postgres"):
        # SQLAlchemy's default PostgreSQL driver is psycopg2, which Keel does not ship.
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(
        url,
        json_serializer=json_dumps,
        json_deserializer=orjson.loads,
        pool_size=10,
        max_overflow=10,
        # A server restart or idle-timeout silently kills pooled connections;
        # pre-ping turns that into a transparent reconnect instead of an error.
        pool_pre_ping=True,
        pool_recycle=1800,
    )
