"""Alembic environment: runs on the connection keel.store.migrate hands over, online only."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from keel.store.schema import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things in place; batch mode recreates the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "keel migrations run through keel.store.migrate (upgrade/downgrade/current), "
            "which passes a connection; the alembic CLI and offline mode are not supported"
        )
    _run(connection)


_main()
