"""`keel prompts`: the prompt registry from a terminal or from CI, through a running Keel.

Every command talks to the REST API of `keel serve` (`--url` or `KEEL_URL`, key in
`KEEL_API_KEY` or `KEEL_MASTER_KEY`), never to the database: on merge, CI knows
only where Keel is. `push` validates every file locally first, so a typo is
reported as `file:line: field: message` (exit 2) before anything is sent. A refusal
from the server is one `error: ...` line on stderr (exit 1); a 422 lists the fields.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from keel.cli.api_client import KeelApi, segment
from keel.cli.remote import InvalidFiles, RemoteGroup, connect, pass_api, url_option
from keel.core.prompts import PromptTemplate
from keel.core.rollout import LATEST, Target, describe
from keel.prompts.files import PromptFileError, dump_yaml, load_prompt_file, prompt_files

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_FOLDER = Path("prompts")
_STEP = re.compile(r"^v?(\d+)=(\d+(?:\.\d+)?)%?$")


@click.group(cls=RemoteGroup)
@url_option
@click.pass_context
def prompts(ctx: click.Context, url: str) -> None:
    """Versioned prompts: push YAML files, move labels, roll out and roll back."""
    connect(ctx, url)


def actor_option(function: F) -> F:
    """The `--actor` option of the commands that move a label."""
    return click.option(
        "--actor", default=None, help="Who (audit log); default: git config user.name, else $USER."
    )(function)


# push


@prompts.command("push", short_help="Push prompt files as new versions.")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show the diff against the registry; write nothing.")
@click.option("-m", "--message", default=None, help="Why; stored on every new version.")
@click.option("--author", default=None, help="Default: git config user.name, else $USER.")
@pass_api
def push(
    api: KeelApi, paths: tuple[Path, ...], dry_run: bool, message: str | None, author: str | None
) -> None:
    """Push prompt files or folders (default prompts/); each changed prompt gets a new version."""
    loaded = load_files(_push_paths(paths))
    commits: dict[Path, str | None] = {}
    documents = []
    for path, template in loaded:
        folder = path.resolve().parent
        if folder not in commits:
            commits[folder] = git("rev-parse", "HEAD", cwd=folder)
        documents.append(
            {
                "document": template.as_document(),
                "source_path": source_path(path),
                "git_commit": commits[folder],
            }
        )
    body = {
        "prompts": documents,
        "author": author or whoami(),
        "message": message,
        "dry_run": dry_run,
    }
    answer = api.post("/api/prompts/push", body)
    print_push(answer["results"], dry_run)


def _push_paths(paths: tuple[Path, ...]) -> list[Path]:
    if paths:
        return list(paths)
    if DEFAULT_FOLDER.is_dir():
        return [DEFAULT_FOLDER]
    raise click.UsageError(
        "there is no prompts/ folder here; name the prompt files or folders to push"
    )


def load_files(paths: list[Path]) -> list[tuple[Path, PromptTemplate]]:
    """Every prompt file under `paths`, validated; Failure (exit 2) listing every problem."""
    try:
        files = prompt_files(paths)
    except PromptFileError as exc:
        raise InvalidFiles([str(exc), "error: nothing was pushed"]) from None
    if not files:
        where = ", ".join(str(p) for p in paths)
        raise InvalidFiles([f"error: no prompt files (*.yaml, *.yml) in {where}"])
    problems: list[str] = []
    loaded: list[tuple[Path, PromptTemplate]] = []
    seen: dict[str, Path] = {}
    for path in files:
        try:
            template, _ = load_prompt_file(path)
        except PromptFileError as exc:
            problems.append(str(exc))
            continue
        if template.name in seen:
            problems.append(
                f"{path}: name: prompt {template.name!r} is also in {seen[template.name]}; "
                "give each file its own name"
            )
            continue
        seen[template.name] = path
        loaded.append((path, template))
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise InvalidFiles([*problems, f"error: {count} in prompt files; nothing was pushed"])
    return loaded


def print_push(results: list[dict[str, Any]], dry_run: bool) -> None:
    """One line per prompt, the diffs of a dry run, and what it all amounts to."""
    rows = []
    for result in results:
        if result["status"] == "unchanged":
            status = f"unchanged (v{result['version']})"
        else:
            verb = "would create" if dry_run else "created"
            was = f"was v{result['previous']}" if result["previous"] else "new"
            status = f"{verb} v{result['version']} ({was})"
        rows.append((result["name"], status, result.get("source_path") or ""))
    name_width = max(len(row[0]) for row in rows)
    status_width = max(len(row[1]) for row in rows)
    for name, status, where in rows:
        click.echo(f"{name:<{name_width}}  {status:<{status_width}}  {where}".rstrip())
    created = [r for r in results if r["status"] == "created"]
    unchanged = len(results) - len(created)
    if dry_run:
        console = _console()
        for result in created:
            click.echo("")
            print_code(console, result["diff"], "diff")
    if not created:
        click.echo(f"Nothing new: {_count(unchanged, 'prompt')} unchanged.")
    elif dry_run:
        click.echo(
            f"Dry run: {_count(len(created), 'prompt')} would get a new version; "
            "nothing was written."
        )
    else:
        rest = f" ({_count(unchanged, 'prompt')} unchanged)" if unchanged else ""
        click.echo(f"Pushed {_count(len(created), 'new version')}{rest}.")


# reading


@prompts.command("list", short_help="Prompts with their versions and labels.")
@click.option("--json", "as_json", is_flag=True, help="The registry's list as JSON.")
@pass_api
def list_prompts(api: KeelApi, as_json: bool) -> None:
    """Every prompt with its latest version, labels, rollouts and tags."""
    data = api.get("/api/prompts")["data"]
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        return
    if not data:
        click.echo("No prompts registered yet; push some with `keel prompts push`.")
        return
    table = Table(title=f"{_count(len(data), 'prompt')}")
    for column in ("name", "type", "latest", "labels", "tags", "updated (UTC)"):
        table.add_column(column, no_wrap=column != "tags")
    for prompt in data:
        table.add_row(
            prompt["name"],
            prompt["type"],
            f"v{prompt['latest']}",
            Text("\n".join(label_lines(prompt["labels"])) or "-"),
            Text(", ".join(prompt["tags"]) or "-"),
            utc(prompt["updated_at"]),
        )
    _console().print(table)


@prompts.command("show", short_help="One version: who, why, and its YAML.")
@click.argument("reference", metavar="NAME[@LABEL|@VERSION]")
@click.option("--json", "as_json", is_flag=True, help="The version as the API returns it.")
@pass_api
def show(api: KeelApi, reference: str, as_json: bool) -> None:
    """One version of a prompt (default: latest): who pushed it, why, and its YAML."""
    name, _, selector = reference.partition("@")
    if not name:
        raise click.BadParameter("write NAME, NAME@LABEL or NAME@VERSION", param_hint="NAME")
    version = api.get(f"/api/prompts/{segment(name)}/versions/{segment(selector or LATEST)}")
    if as_json:
        click.echo(orjson.dumps(version, option=orjson.OPT_INDENT_2))
        return
    labels = api.get(f"/api/prompts/{segment(name)}")["labels"]
    serving = [
        label if len(targets) == 1 else f"{label} ({_percent(t['weight'])})"
        for label, targets in sorted(labels.items())
        for t in targets
        if t["version"] == version["version"]
    ]
    source = version["source_path"] or "-"
    if version["git_commit"]:
        source += f" @ {version['git_commit'][:12]}"
    rows = [
        ("prompt", f"{version['name']} v{version['version']} ({version['type']})"),
        ("labels", ", ".join(serving) or "-"),
        ("author", version["author"] or "-"),
        ("message", version["message"] or "-"),
        ("created", utc(version["created_at"])),
        ("source", source),
        ("includes", ", ".join(f"{r} → v{n}" for r, n in version["pins"].items()) or "-"),
        ("hash", version["content_hash"][:16]),
    ]
    console = _console()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in rows:
        grid.add_row(key, Text(value))
    console.print(grid)
    click.echo("")
    print_code(console, dump_yaml(version["document"]), "yaml")


@prompts.command("diff", short_help="Diff two versions or labels.")
@click.argument("name")
@click.argument("a", default="production")
@click.argument("b", default=LATEST)
@pass_api
def diff(api: KeelApi, name: str, a: str, b: str) -> None:
    """What changed from version or label A (default production) to B (default latest)."""
    answer = api.get(f"/api/prompts/{segment(name)}/diff", {"a": a, "b": b})
    if not answer["diff"]:
        click.echo(f"{name}: {a} and {b} read the same.")
        return
    print_code(_console(), answer["diff"], "diff")


@prompts.command("history", short_help="Pushes and label moves, oldest first.")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="The audit events as JSON.")
@pass_api
def history(api: KeelApi, name: str, as_json: bool) -> None:
    """Every push and label move of a prompt, oldest first."""
    events = api.get(f"/api/prompts/{segment(name)}/history")["data"]
    if as_json:
        click.echo(orjson.dumps(events, option=orjson.OPT_INDENT_2))
        return
    table = Table(title=f"{name}: {_count(len(events), 'change')}")
    table.add_column("when (UTC)", no_wrap=True)
    table.add_column("who", no_wrap=True)
    table.add_column("what")
    for event in events:
        table.add_row(utc(event["at"]), Text(event["actor"] or "-"), Text(describe_event(event)))
    _console().print(table)


def describe_event(event: dict[str, Any]) -> str:
    """`push v3 "message"`, `rollout production: v7 → v8 10%, v7 90%`, ..."""
    action: str = event["action"]
    detail: dict[str, Any] = event["detail"] or {}
    if action == "prompt.push":
        text = f"push v{detail.get('version')}"
        message = (detail.get("message") or "").strip().splitlines()
        return f'{text} "{message[0]}"' if message else text
    if action.startswith("prompt.label.") and "label" in detail:
        verb = action.removeprefix("prompt.label.")
        verb = "label" if verb == "set" else verb
        return f"{verb} {detail['label']}: {targets_text(detail.get('from'))} → " + targets_text(
            detail.get("to")
        )
    return f"{action} {orjson.dumps(detail).decode()}"


# writing files


@prompts.command("pull", short_help="Write a label's versions as YAML files.")
@click.argument(
    "directory", default=str(DEFAULT_FOLDER), type=click.Path(file_okay=False, path_type=Path)
)
@click.option("--label", default=LATEST, show_default=True, help="The label to pull.")
@pass_api
def pull(api: KeelApi, directory: Path, label: str) -> None:
    """Write each prompt's version under a label as DIRECTORY/<name>.yaml (default prompts/)."""
    data = api.get("/api/prompts")["data"]
    if not data:
        click.echo("No prompts registered; nothing to pull.")
        return
    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    for prompt in data:
        name = prompt["name"]
        targets = prompt["labels"].get(label)
        if not targets:
            click.echo(f"skipped {name}: it has no label {label!r}", err=True)
            continue
        if len(targets) > 1:
            click.echo(
                f"skipped {name}: {label} is rolling out ({targets_text(targets)}); "
                "promote or abort it first, or `keel prompts show NAME@VERSION`",
                err=True,
            )
            continue
        version = api.get(f"/api/prompts/{segment(name)}/versions/{segment(label)}")
        path = directory / f"{name}.yaml"
        text = dump_yaml(version["document"])
        same = path.is_file() and path.read_text(encoding="utf-8") == text
        if not same:
            path.write_text(text, encoding="utf-8")
            written += 1
        state = "up to date" if same else "written"
        click.echo(f"{path}  {name} v{version['version']} ({label}) {state}")
    click.echo(f"Pulled {label} into {directory}/: {_count(written, 'file')} written.")


# labels


@prompts.command("label", short_help="Point a label at a version.")
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1))
@click.argument("label")
@actor_option
@pass_api
def label(api: KeelApi, name: str, version: int, label: str, actor: str | None) -> None:
    """Point LABEL of NAME at VERSION (ending any rollout on it)."""
    body = {"version": version, "actor": actor or whoami()}
    print_move(name, api.put(_label_path(name, label), body))


@prompts.command("rollback", short_help="Move a label back to its previous target.")
@click.argument("name")
@click.argument("label")
@actor_option
@pass_api
def rollback(api: KeelApi, name: str, label: str, actor: str | None) -> None:
    """Move LABEL of NAME back to where it pointed before its last move."""
    print_move(name, api.post(_label_path(name, label) + "/rollback", {"actor": actor or whoami()}))


class RolloutStep(click.ParamType[tuple[int, float]]):
    """`VERSION=PERCENT[%]`, e.g. `8=10%`: version 8 gets 10% of the label's units."""

    name = "VERSION=PERCENT"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, float]:
        """(version, percent) or a usage error saying what to write."""
        if isinstance(value, tuple):
            return value
        match = _STEP.match(str(value).replace(" ", ""))
        if match is None:
            self.fail(f"{value!r} is not VERSION=PERCENT; write e.g. 8=10%", param, ctx)
        version, percent = int(match.group(1)), float(match.group(2))
        if version < 1 or not 0 < percent <= 100:
            self.fail(
                f"{value!r}: the version is a number from 1, the percent more than 0 and "
                "at most 100",
                param,
                ctx,
            )
        return version, percent


@prompts.command("rollout", short_help="Roll out gradually; --promote or --abort.")
@click.argument("name")
@click.argument("label")
@click.argument("step", required=False, type=RolloutStep(), metavar="[VERSION=PERCENT]")
@click.option("--promote", is_flag=True, help="End the rollout: the new version takes all.")
@click.option("--abort", is_flag=True, help="End the rollout: back to the version before.")
@actor_option
@pass_api
def rollout(
    api: KeelApi,
    name: str,
    label: str,
    step: tuple[int, float] | None,
    promote: bool,
    abort: bool,
    actor: str | None,
) -> None:
    """Give a version a share of LABEL (`8=10%`), or end the rollout with --promote / --abort."""
    if sum((step is not None, promote, abort)) != 1:
        raise click.UsageError("give one of VERSION=PERCENT (e.g. 8=10%), --promote or --abort")
    who = actor or whoami()
    path = _label_path(name, label)
    if step is not None:
        version, percent = step
        event = api.post(path + "/rollout", {"version": version, "weight": percent, "actor": who})
    else:
        event = api.post(path + ("/promote" if promote else "/abort"), {"actor": who})
    print_move(name, event)


_MOVES = {
    "set": "",
    "rollback": " rolled back",
    "rollout": " rolling out",
    "promote": " promoted",
    "abort": " rollout aborted",
}


def print_move(name: str, event: dict[str, Any]) -> None:
    """`rag_qa: production rolling out → v8 10%, v7 90% (was v7)`."""
    verb = _MOVES.get(event["action"], f" {event['action']}")
    click.echo(
        f"{name}: {event['label']}{verb} → {targets_text(event['to'])} "
        f"(was {targets_text(event['from'])})"
    )


def _label_path(name: str, label: str) -> str:
    return f"/api/prompts/{segment(name)}/labels/{segment(label)}"


# formatting and the local machine


def targets_text(targets: Iterable[dict[str, Any]] | None) -> str:
    """`v8 10%, v7 90%`, `v7`, or `none` for a label that did not exist."""
    if not targets:
        return "none"
    return describe([Target(int(t["version"]), float(t["weight"])) for t in targets])


def label_lines(labels: dict[str, list[dict[str, Any]]]) -> list[str]:
    """`production → v7` per label, `latest` left out (it has its own column)."""
    return [
        f"{label} → {targets_text(targets)}"
        for label, targets in sorted(labels.items())
        if label != LATEST
    ]


def utc(epoch: float) -> str:
    """`2025-03-01T12:00:00Z`."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def source_path(path: Path) -> str:
    """`path` relative to the current directory when it is under it, else absolute."""
    absolute = path.resolve()
    try:
        return absolute.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return absolute.as_posix()


def git(*args: str, cwd: Path | None = None) -> str | None:
    """The output of `git args` in `cwd`, or None when git is missing or says no."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    output = done.stdout.strip()
    return output if done.returncode == 0 and output else None


def whoami() -> str | None:
    """Who is pushing or moving a label: git's user.name, else $USER."""
    return git("config", "user.name") or os.environ.get("USER") or os.environ.get("USERNAME")


def print_code(console: Console, text: str, lexer: str) -> None:
    """YAML or a diff: highlighted on a terminal, plain text when piped."""
    if console.is_terminal:
        console.print(
            Syntax(text.rstrip("\n"), lexer, theme="ansi_dark", background_color="default")
        )
    else:
        click.echo(text.rstrip("\n"))


def _console() -> Console:
    # Piped output has no terminal width; a table folded into 80 columns is unreadable.
    console = Console(highlight=False)
    return console if console.is_terminal else Console(width=160, highlight=False)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _percent(weight: float) -> str:
    return f"{weight:g}%"
