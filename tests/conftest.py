"""Shared fixtures: every database test runs on SQLite and on the local PostgreSQL.

`db_url` is a migrated, empty database: a fresh SQLite file per test (copied
from a template migrated once per session), or one PostgreSQL database created
once per session and truncated before each test. `blank_db_url` is an empty,
never-migrated database, for migration tests. PostgreSQL is not optional:
when it is unreachable the postgresql variants fail with the reason, they
never skip. Point them at another server with KEEL_TEST_POSTGRES_URL.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, inspect

from keel.core.ids import new_span_id, new_trace_id
from keel.core.spans import Span
from keel.store.engine import create_engine_for
from keel.store.migrate import upgrade

POSTGRES_URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


class PostgresServer:
    """The test PostgreSQL server: creates and drops uniquely named databases."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5)

    def check(self) -> None:
        """Fail the test (not skip) with what to do when the server cannot be reached."""
        try:
            with self._admin() as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            pytest.fail(
                f"PostgreSQL is required for the postgresql tests but {self.admin_url} is "
                f"unreachable: {exc}. Start the local server (127.0.0.1:5432, trust auth) or "
                "set KEEL_TEST_POSTGRES_URL; run `pytest -m 'not postgres'` to leave them out.",
                pytrace=False,
            )

    def new_database_url(self) -> str:
        """The URL of a uniquely named database that does not exist yet."""
        base = self.admin_url.rsplit("/", 1)[0]
        return f"{base}/keel_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    def create_database(self, url: str | None = None) -> str:
        """Create the database at `url` (default: a new unique name); returns its URL."""
        url = url or self.new_database_url()
        name = url.rsplit("/", 1)[1]
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return url

    def rename_database(self, url: str, new_url: str) -> None:
        """Rename the database at `url` (nobody may be connected to it) to the name in `new_url`."""
        old, new = url.rsplit("/", 1)[1], new_url.rsplit("/", 1)[1]
        with self._admin() as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(old), sql.Identifier(new)
                )
            )

    def drop_database(self, url: str) -> None:
        """Drop the database at `url`, closing whatever connections a test left open."""
        name = url.rsplit("/", 1)[1]
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """The local PostgreSQL server, checked reachable once."""
    server = PostgresServer(POSTGRES_URL)
    server.check()
    return server


@pytest.fixture(scope="session")
def _postgres_migrated(postgres_server: PostgresServer) -> Iterator[tuple[str, list[str]]]:
    url = postgres_server.create_database()
    try:
        upgrade(url)
        engine = create_engine_for(url)
        tables = [t for t in inspect(engine).get_table_names() if t != "alembic_version"]
        engine.dispose()
        yield url, tables
    finally:
        postgres_server.drop_database(url)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "keel.db"
    upgrade(f"sqlite:///{path}")
    # Copying the main file alone is only safe once the WAL is checkpointed into it.
    engine = create_engine_for(f"sqlite:///{path}")
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


def _truncate(url: str, tables: list[str]) -> None:
    if not tables:
        return
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        # A test that left a transaction open would otherwise hang the next one.
        conn.execute("SET lock_timeout = '5s'")
        conn.execute(
            sql.SQL("TRUNCATE TABLE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in tables)
            )
        )


@pytest.fixture(params=DIALECTS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database migrated to head, once per dialect (sqlite, postgresql)."""
    if request.param == "sqlite":
        path = tmp_path / "keel.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    url, tables = request.getfixturevalue("_postgres_migrated")
    _truncate(url, tables)
    return str(url)


@pytest.fixture(params=DIALECTS)
def blank_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database that was never migrated, once per dialect."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank' / 'keel.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on `db_url`, disposed after the test."""
    engine = create_engine_for(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def dialect(db_url: str) -> str:
    """`sqlite` or `postgresql`, for the rare assertion that differs by dialect."""
    return "sqlite" if db_url.startswith("sqlite") else "postgresql"


@pytest.fixture
def make_span() -> Callable[..., Span]:
    """A factory of generation spans with fresh ids; keyword arguments override any field."""
    clock = [1_700_000_000.0]

    def make(**fields: Any) -> Span:
        clock[0] += 1.0
        start = fields.pop("start_time", clock[0])
        values: dict[str, Any] = {
            "trace_id": new_trace_id(),
            "span_id": new_span_id(),
            "name": "chat fast",
            "kind": "generation",
            "start_time": start,
            "end_time": start + 0.25,
        }
        values.update(fields)
        return Span(**values)

    return make
