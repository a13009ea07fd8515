"""`keel serve`: the gateway in one process (uvicorn, uvloop, httptools)."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys

import click
import uvicorn

from keel.bootstrap import build_container
from keel.core.errors import ConfigError
from keel.server.app import create_app
from keel.settings import load_settings


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="keel.yaml (default: $KEEL_CONFIG, else ./keel.yaml if present).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=4000, show_default=True, type=int)
def serve(config_path: str | None, host: str, port: int) -> None:
    """Serve the OpenAI-compatible gateway under /v1."""
    settings = load_settings(config_path, dict(os.environ))
    if settings.master_key is None and not _loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without auth.master_key: anyone who can reach this "
            "port could spend your provider keys. Set `auth: {master_key: env:KEEL_MASTER_KEY}` "
            "in keel.yaml, or use --host 127.0.0.1"
        )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    for warning in settings.warnings:
        click.echo(f"warning: {warning}", err=True)
    container = build_container(settings)
    auth = (
        "master key required on /v1"
        if settings.master_key
        else "no master key: listening on loopback only"
    )
    click.echo(
        f"Keel gateway on http://{host}:{port}/v1 ({auth}); "
        f"models: {', '.join(sorted(settings.aliases)) or 'none'}; "
        f"database: {_redact(settings.database_url)}",
        err=True,
    )
    # uvicorn re-raises SIGTERM after its graceful shutdown (queue drained by then); a
    # requested stop that completed cleanly should exit 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        create_app(container),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=settings.access_log,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, location = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}@{location}"
    return url
