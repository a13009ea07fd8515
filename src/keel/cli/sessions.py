"""`keel sessions`: conversations (spans sharing a session id) and their totals."""

from __future__ import annotations

import os
import sys
import time

import click
import orjson
from rich.table import Table

from keel.bootstrap import open_queries
from keel.cli.traces import _clock, _console, parse_since
from keel.settings import load_settings


@click.group()
def sessions() -> None:
    """Sessions: the traces of one conversation or user journey."""


@sessions.command("list")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.option("--since", default="24h", show_default=True, help="How far back: 30m, 1h, 7d.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_sessions(config_path: str | None, since: str, limit: int, as_json: bool) -> None:
    """Sessions active in the window, most recently active first."""
    now = time.time()
    queries = open_queries(load_settings(config_path, dict(os.environ)))
    found = queries.sessions((now - parse_since(since), now + 1.0), limit).items
    if as_json:
        for session in found:
            line = {
                "session": session.key,
                "user": session.user_id,
                "traces": session.traces,
                "spans": session.spans,
                "first_seen": session.first_seen,
                "last_seen": session.last_seen,
                "input_tokens": session.input_tokens,
                "output_tokens": session.output_tokens,
                "cost_usd": session.cost_usd,
            }
            sys.stdout.buffer.write(orjson.dumps(line) + b"\n")
        sys.stdout.buffer.flush()
        return
    table = Table(title=f"{len(found)} session(s) in the last {since}")
    for column in (
        "session",
        "user",
        "traces",
        "spans",
        "first",
        "last",
        "tokens in/out",
        "cost $",
    ):
        table.add_column(column, no_wrap=True)
    for session in found:
        table.add_row(
            session.key,
            session.user_id or "",
            str(session.traces),
            str(session.spans),
            _clock(session.first_seen),
            _clock(session.last_seen),
            f"{session.input_tokens}/{session.output_tokens}",
            f"{session.cost_usd:.6f}",
        )
    _console().print(table)
