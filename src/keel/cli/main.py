"""Entry point of the `keel` command: the group and its shared options."""

from __future__ import annotations

import sys

import click

from keel import __version__
from keel.cli.datasets import datasets
from keel.cli.db import db
from keel.cli.evals import eval_group
from keel.cli.prompts import prompts
from keel.cli.serve import serve
from keel.cli.sessions import sessions
from keel.cli.traces import traces
from keel.core.errors import ConfigError, KeelError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="keel")
def cli() -> None:
    """Keel: gateway, tracing and evaluation for LLM applications."""


cli.add_command(serve)
cli.add_command(traces)
cli.add_command(sessions)
cli.add_command(prompts)
cli.add_command(datasets)
cli.add_command(eval_group)
cli.add_command(db)


def main() -> None:
    """Run the CLI; Keel's own errors become one line on stderr and exit code 2."""
    try:
        cli.main(standalone_mode=False, prog_name="keel")
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        click.echo(f"keel: configuration error: {exc}", err=True)
        sys.exit(2)
    except KeelError as exc:
        click.echo(f"keel: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
