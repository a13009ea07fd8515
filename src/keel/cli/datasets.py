"""`keel datasets`: push dataset files, make datasets from traces, read and pull versions.

Like `keel prompts`, every command talks to the REST API of a running Keel (`--url` or
`KEEL_URL`, key in `KEEL_API_KEY` or `KEEL_MASTER_KEY`). `push` reads and checks the
file locally first, so a mistake is reported as `file:line: field: message` (exit 2)
before anything is sent; a refusal from the server is `error: ...` (exit 1).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from keel.cli.api_client import KeelApi, segment
from keel.cli.prompts import source_path, utc, whoami
from keel.cli.remote import Failure, InvalidFiles, RemoteGroup, connect, pass_api, url_option
from keel.cli.traces import parse_since
from keel.core.datasets import item_to_json
from keel.evals.dataset_files import load_dataset_file
from keel.evals.datasets import InvalidItems

_SHOWN_PROBLEMS = 20
_SCORE = re.compile(r"^([^=!<>:]+?)\s*(!=|>=|<=|=|>|<)\s*(.+)$")
_OPERATORS = {"=": "eq", "!=": "ne", ">=": "gte", "<=": "lte", ">": "gt", "<": "lt"}
_PREVIEW = 60


@click.group(cls=RemoteGroup)
@url_option
@click.pass_context
def datasets(ctx: click.Context, url: str) -> None:
    """Versioned datasets: push JSONL, CSV or YAML files, or make them from traces."""
    connect(ctx, url)


# writing


@datasets.command("push", short_help="Push a dataset file as a new version.")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", "name", required=True, help="The dataset's name.")
@click.option("-m", "--message", default=None, help="Why; stored on the new version.")
@click.option("--author", default=None, help="Default: git config user.name, else $USER.")
@click.option("--dry-run", is_flag=True, help="Say what would change; write nothing.")
@pass_api
def push(
    api: KeelApi, path: Path, name: str, message: str | None, author: str | None, dry_run: bool
) -> None:
    """Push a JSONL, CSV or YAML file as the next version of dataset NAME."""
    try:
        items = load_dataset_file(path)
    except InvalidItems as exc:
        raise InvalidFiles(problem_lines(exc, str(path))) from None
    body = {
        "name": name,
        "items": [item_to_json(item) for item in items],
        "message": message,
        "source": source_path(path),
        "author": author or whoami(),
        "dry_run": dry_run,
    }
    print_push(api.post("/api/datasets", body))


def problem_lines(error: InvalidItems, path: str) -> list[str]:
    """Each problem (the first `_SHOWN_PROBLEMS`), then what it all amounts to."""
    lines = [str(problem) for problem in error.problems[:_SHOWN_PROBLEMS]]
    hidden = len(error.problems) - _SHOWN_PROBLEMS
    if hidden > 0:
        lines.append(f"... and {hidden} more")
    count = _count(len(error.problems), "problem")
    return [*lines, f"error: {count} in {path}; nothing was pushed"]


def print_push(answer: dict[str, Any]) -> None:
    """`rag_golden created v3 (was v2): 120 items; 5 added, 1 removed, 2 changed`."""
    name, version, items = answer["name"], answer["version"], _count(answer["item_count"], "item")
    if answer["status"] == "unchanged":
        click.echo(f"{name} unchanged (v{version}): {items}. Nothing new.")
        return
    verb = "would create" if answer["dry_run"] else "created"
    was = f"was v{answer['previous']}" if answer["previous"] else "new"
    changes = ", ".join(
        f"{answer[key]} {key}" for key in ("added", "removed", "changed") if answer[key]
    )
    click.echo(f"{name} {verb} v{version} ({was}): {items}" + (f"; {changes}" if changes else ""))
    if answer["dry_run"]:
        click.echo("Dry run: nothing was written.")


@datasets.command("from-traces", short_help="Make a version from traces a filter selects.")
@click.argument("name")
@click.option("--prompt", default=None, metavar="NAME[@VERSION]", help="Traces that used it.")
@click.option(
    "--score",
    "scores",
    multiple=True,
    metavar="NAME=VALUE",
    help="A score of the trace: thumbs=false, accuracy<0.5, tone!=friendly (repeatable).",
)
@click.option("--since", default="7d", show_default=True, help="How far back: 1h, 7d, 2w.")
@click.option("--tag", "tags", multiple=True, help="A tag on the trace (repeatable).")
@click.option("--user", default=None, help="Only this user's traces.")
@click.option("--session", default=None, help="Only this session's traces.")
@click.option("--model", default=None, help="Some call used this alias or upstream model.")
@click.option("--trace-name", default=None, help="The root span's name.")
@click.option("--status", type=click.Choice(["ok", "error"]), default=None)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--expected-from-output", is_flag=True, help="Expected = the trace's output.")
@click.option("--append", is_flag=True, help="Keep the current items; add the traces' after.")
@click.option("-m", "--message", default=None, help="Why; stored on the new version.")
@click.option("--dry-run", is_flag=True, help="Say what would change; write nothing.")
@pass_api
def from_traces(
    api: KeelApi,
    name: str,
    prompt: str | None,
    scores: tuple[str, ...],
    since: str,
    tags: tuple[str, ...],
    user: str | None,
    session: str | None,
    model: str | None,
    trace_name: str | None,
    status: str | None,
    limit: int,
    expected_from_output: bool,
    append: bool,
    message: str | None,
    dry_run: bool,
) -> None:
    """Make the next version of dataset NAME from the newest traces that match, one item
    per trace (its input, its output as expected with --expected-from-output)."""
    body: dict[str, Any] = {
        "from": time.time() - parse_since(since),
        "score": [score_filter(text) for text in scores],
        "tag": list(tags),
        "limit": limit,
        "expected_from_output": expected_from_output,
        "append": append,
        "message": message,
        "author": whoami(),
        "dry_run": dry_run,
    }
    optional = {"user": user, "session": session, "model": model, "name": trace_name}
    body.update({key: value for key, value in optional.items() if value is not None})
    if status is not None:
        body["status"] = status
    if prompt is not None:
        prompt_name, _, version = prompt.partition("@")
        if not prompt_name or (version and not version.isdigit()):
            raise click.BadParameter("write NAME or NAME@VERSION", param_hint="'--prompt'")
        body["prompt"] = prompt_name
        if version:
            body["prompt_version"] = int(version)
    answer = api.post(f"/api/datasets/{segment(name)}/from-traces", body)
    skipped = [
        f"{answer[key]} {label}"
        for key, label in (
            ("without_input", "without a recorded input"),
            ("duplicates", "repeating an input"),
        )
        if answer[key]
    ]
    kept = f", {answer['kept']} kept" if answer["kept"] else ""
    click.echo(
        f"{_count(answer['traces'], 'trace')} matched{kept}"
        + (f" ({'; '.join(skipped)} left out)" if skipped else "")
        + "."
    )
    print_push(answer)


def score_filter(text: str) -> str:
    """`thumbs=false` -> `thumbs:eq:false`; `name:op:value` passes as it is."""
    if text.count(":") >= 2:
        return text
    match = _SCORE.match(text.strip())
    if match is None:
        raise click.BadParameter(
            f"{text!r} is not NAME=VALUE (or !=, >=, <=, >, <), e.g. thumbs=false",
            param_hint="'--score'",
        )
    score, operator, value = match.groups()
    return f"{score}:{_OPERATORS[operator]}:{value}"


# reading


@datasets.command("list", short_help="Datasets with their newest version.")
@click.option("--json", "as_json", is_flag=True, help="The list as JSON.")
@pass_api
def list_datasets(api: KeelApi, as_json: bool) -> None:
    """Every dataset with its newest version, item count and last change."""
    data = api.get("/api/datasets")["data"]
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        return
    if not data:
        click.echo("No datasets yet; push one with `keel datasets push FILE --name NAME`.")
        return
    table = Table(title=_count(len(data), "dataset"))
    for column in ("name", "latest", "items", "updated (UTC)", "message"):
        table.add_column(column, no_wrap=column != "message")
    for dataset in data:
        table.add_row(
            dataset["name"],
            f"v{dataset['latest']}",
            str(dataset["item_count"]),
            utc(dataset["updated_at"]),
            Text(_first_line(dataset["message"])),
        )
    _console().print(table)


@datasets.command("show", short_help="One version: who, why, and its first items.")
@click.argument("name")
@click.option("--version", type=click.IntRange(min=1), default=None, help="Default: the newest.")
@click.option("--items", "shown", default=10, show_default=True, type=click.IntRange(0, 1000))
@click.option("--json", "as_json", is_flag=True, help="The version's header as JSON.")
@pass_api
def show(api: KeelApi, name: str, version: int | None, shown: int, as_json: bool) -> None:
    """A dataset version's header and its first items."""
    header = api.get(f"/api/datasets/{segment(name)}", _version_query(version))
    if as_json:
        click.echo(orjson.dumps(header, option=orjson.OPT_INDENT_2))
        return
    console = _console()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    newest = (
        " (newest)" if header["version"] == header["latest"] else f" (newest v{header['latest']})"
    )
    rows = [
        ("dataset", f"{header['name']} v{header['version']}{newest}"),
        ("items", str(header["item_count"])),
        ("author", header["author"] or "-"),
        ("message", header["message"] or "-"),
        ("created", utc(header["created_at"])),
        ("source", header["source"] or "-"),
        ("hash", header["content_hash"][:16]),
    ]
    for key, value in rows:
        grid.add_row(key, Text(value))
    console.print(grid)
    if not shown:
        return
    query = {"version": str(header["version"]), "limit": str(shown)}
    items = api.get(f"/api/datasets/{segment(name)}/items", query)["data"]
    table = Table(title=f"first {_count(len(items), 'item')}")
    for column in ("id", "input", "expected", "context"):
        table.add_column(column, no_wrap=column == "id", overflow="fold")
    for item in items:
        table.add_row(
            item["id"],
            Text(_preview(item["input"])),
            Text(_preview(item.get("expected"))),
            str(len(item.get("context", []))),
        )
    console.print(table)


@datasets.command("versions", short_help="Every version of a dataset, newest first.")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="The versions as JSON.")
@pass_api
def versions(api: KeelApi, name: str, as_json: bool) -> None:
    """Every version of a dataset: when, who, why, where from."""
    data = api.get(f"/api/datasets/{segment(name)}/versions")["data"]
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        return
    table = Table(title=f"{name}: {_count(len(data), 'version')}")
    for column in ("version", "items", "created (UTC)", "author", "message", "source"):
        table.add_column(column, no_wrap=column in ("version", "items", "created (UTC)"))
    for version in data:
        table.add_row(
            f"v{version['version']}",
            str(version["item_count"]),
            utc(version["created_at"]),
            Text(version["author"] or "-"),
            Text(_first_line(version["message"])),
            Text(version["source"] or "-"),
        )
    _console().print(table)


@datasets.command("pull", short_help="Write a version's items as JSONL.")
@click.argument("name")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The file to write (default NAME.jsonl; - for standard output).",
)
@click.option("--version", type=click.IntRange(min=1), default=None, help="Default: the newest.")
@pass_api
def pull(api: KeelApi, name: str, output: Path | None, version: int | None) -> None:
    """Write the items of a dataset version as JSON Lines, one item a line."""
    header = api.get(f"/api/datasets/{segment(name)}", _version_query(version))
    query = {"version": str(header["version"])}
    lines = [
        orjson.dumps(item) + b"\n"
        for item in api.pages(f"/api/datasets/{segment(name)}/items", query)
    ]
    if output is not None and str(output) == "-":
        sys.stdout.buffer.write(b"".join(lines))
        sys.stdout.buffer.flush()
        return
    target = output or Path(f"{name}.jsonl")
    if target.suffix.lower() not in (".jsonl", ".ndjson"):
        raise Failure([f"error: {target} is not a .jsonl file; pull writes JSON Lines"])
    target.write_bytes(b"".join(lines))
    click.echo(f"{target}  {name} v{header['version']}: {_count(len(lines), 'item')} written.")


# formatting


def _version_query(version: int | None) -> dict[str, str] | None:
    return None if version is None else {"version": str(version)}


def _preview(value: Any) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = " ".join(text.split())
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 1] + "…"


def _first_line(message: str | None) -> str:
    lines = (message or "").strip().splitlines()
    return lines[0] if lines else "-"


def _console() -> Console:
    # Piped output has no terminal width; a table folded into 80 columns is unreadable.
    console = Console(highlight=False)
    return console if console.is_terminal else Console(width=160, highlight=False)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
