"""What every CLI group that talks to a running Keel shares: the `--url` option and key,
and one clear line (and exit code) for each kind of failure.

`keel prompts`, `keel datasets` and `keel eval` reach Keel through its REST API (`--url`
or `KEEL_URL`, key in `KEEL_API_KEY` or `KEEL_MASTER_KEY`), never the database: in CI,
only the server's address is known. A refusal from the server is `error: ...` on stderr
(exit 1; a 422 lists the fields); files that cannot be used are listed the same way with
exit 2, before anything is sent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO, Any, TypeVar

import click

from keel.cli.api_client import DEFAULT_URL, ApiError, ApiProblem, KeelApi

F = TypeVar("F", bound=Callable[..., Any])


class Failure(click.ClickException):
    """An error shown as the given lines on stderr (exit code 1)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines

    def show(self, file: IO[Any] | None = None) -> None:
        """Print the lines as they are (no `Error:` prefix)."""
        for line in self.lines:
            click.echo(line, file=file, err=True)


class InvalidFiles(Failure):
    """Files that cannot be used; nothing was sent (exit code 2, like a usage error)."""

    exit_code = 2


def api_failure(error: ApiError) -> Failure:
    """`error: <detail>` (and, for a 422, one line per field) for an API error."""
    lines = [f"error: {error}"]
    if isinstance(error, ApiProblem):
        if error.status == 401:
            lines[0] += " (set KEEL_API_KEY to a key of this Keel)"
        for item in error.errors:
            where = ": ".join(str(item[k]) for k in ("file", "field") if item.get(k))
            lines.append(f"  {where}: {item.get('message', '')}" if where else f"  {item}")
    return Failure(lines)


class RemoteGroup(click.Group):
    """A command group whose subcommands' API errors become one clear failure."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            raise api_failure(exc) from None


def url_option(function: F) -> F:
    """The `--url` option (also KEEL_URL) of a group that talks to a running Keel."""
    return click.option(
        "--url",
        envvar="KEEL_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="The running Keel (also KEEL_URL); the key comes from KEEL_API_KEY or "
        "KEEL_MASTER_KEY.",
    )(function)


def connect(ctx: click.Context, url: str, timeout_s: float = 30.0) -> None:
    """Check `url` and leave the API client for the subcommands in `ctx.obj`."""
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(
            f"{url!r} is not an http(s) URL; write e.g. {DEFAULT_URL}", param_hint="'--url'"
        )
    key = os.environ.get("KEEL_API_KEY") or os.environ.get("KEEL_MASTER_KEY") or None
    ctx.obj = KeelApi(url.rstrip("/"), key, timeout_s=timeout_s)


pass_api = click.make_pass_decorator(KeelApi)
