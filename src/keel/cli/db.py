"""`keel db`: migrate the database schema."""

from __future__ import annotations

import os

import click

from keel.settings import load_settings
from keel.store import migrate


@click.group()
def db() -> None:
    """Database schema: upgrade, downgrade, show the current revision."""


@db.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.option("--revision", default="head", show_default=True)
def upgrade(config_path: str | None, revision: str) -> None:
    """Migrate the database to REVISION (default: the newest)."""
    settings = load_settings(config_path, dict(os.environ))
    migrate.upgrade(settings.database_url, revision)
    click.echo(f"database at revision {migrate.current(settings.database_url)}")


@db.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.argument("revision")
def downgrade(config_path: str | None, revision: str) -> None:
    """Migrate the database down to REVISION (`base` removes every table)."""
    settings = load_settings(config_path, dict(os.environ))
    migrate.downgrade(settings.database_url, revision)
    click.echo(f"database at revision {migrate.current(settings.database_url) or 'base'}")


@db.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
def current(config_path: str | None) -> None:
    """Print the database's current revision."""
    settings = load_settings(config_path, dict(os.environ))
    click.echo(migrate.current(settings.database_url) or "base (empty database)")
