"""Engines: SQLite pragmas and file creation, PostgreSQL URLs on the psycopg 3 driver."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from keel.store.engine import create_engine_for


def test_sqlite_engine_creates_the_directory_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "not" / "there" / "keel.db"
    engine = create_engine_for(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            pragmas = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
    finally:
        engine.dispose()
    assert path.exists()
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 1,
        "busy_timeout": 5000,
        "foreign_keys": 1,
    }


@pytest.mark.parametrize(
    "url",
    ["postgresql://u@db:5432/keel", "postgres://u@db:5432/keel", "postgresql+psycopg://u@db/keel"],
)
def test_postgresql_urls_use_psycopg3(url: str) -> None:
    engine = create_engine_for(url)  # no connection is made until first use
    try:
        assert engine.url.drivername == "postgresql+psycopg"
        assert engine.url.database == "keel"
    finally:
        engine.dispose()


def test_unsupported_url_is_refused_with_the_supported_forms() -> None:
    with pytest.raises(ValueError, match=r"sqlite:///.*postgresql://"):
        create_engine_for("mysql://u:secret@db/keel")


def test_engine_fixture_connects_on_both_dialects(engine: Engine, dialect: str) -> None:
    with engine.connect() as conn:
        assert conn.dialect.name == dialect
