"""`keel traces`: list and show recorded calls, and print a trace as a tree."""

from __future__ import annotations

import os
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from keel.bootstrap import open_spans
from keel.core.spans import Span
from keel.core.trees import TreeNode, build_tree
from keel.settings import load_settings

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str) -> float:
    """`90s`, `15m`, `1h`, `7d`, `2w` -> seconds; click error otherwise."""
    match = _DURATION.match(value.strip().lower())
    if match is None:
        raise click.BadParameter(
            f"{value!r} is not a duration; write e.g. 30m, 1h, 7d", param_hint="'--since'"
        )
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@click.group()
def traces() -> None:
    """Recorded gateway calls."""


@traces.command("list")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.option("--since", default="1h", show_default=True, help="How far back: 30m, 1h, 7d.")
@click.option("--model", "alias", default=None, help="Only this model alias.")
@click.option("--user", default=None, help="Only this user.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_traces(
    config_path: str | None,
    since: str,
    alias: str | None,
    user: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Recent generations, newest first."""
    window = parse_since(since)
    repository = open_spans(load_settings(config_path, dict(os.environ)))
    spans = repository.list_calls(time.time() - window, alias=alias, user=user, limit=limit)
    if as_json:
        out = sys.stdout.buffer
        for span in spans:
            out.write(orjson.dumps(span_summary(span)) + b"\n")
        out.flush()
        return
    table = Table(title=f"{len(spans)} call(s) in the last {since}")
    for column in (
        "time",
        "trace",
        "model",
        "upstream",
        "status",
        "tokens in/out",
        "cost $",
        "ms",
        "ttft ms",
        "user",
    ):
        table.add_column(column, no_wrap=column != "upstream")
    for span in spans:
        s = span_summary(span)
        table.add_row(
            _clock(span.start_time),
            span.trace_id[:8],
            s["alias"] or "",
            f"{s['provider'] or '?'}/{s['upstream_model'] or '?'}",
            "ok" if s["status"] == "ok" else f"[red]{s['status_code']}[/red]",
            f"{_num(s['usage']['input_tokens'])}/{_num(s['usage']['output_tokens'])}"
            + ("~" if s["usage"]["estimated"] else ""),
            _cost(s),
            f"{s['latency_ms']:.0f}",
            _num(s["ttft_ms"], ".0f"),
            s["user"] or "",
        )
    _console().print(table)


@traces.command("show")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="The trace's spans as JSON.")
@click.argument("trace_id")
def show_trace(config_path: str | None, as_json: bool, trace_id: str) -> None:
    """One trace (by trace id, or the id of one of its spans) with every detail."""
    spans = _trace_of(config_path, trace_id)
    if as_json:
        click.echo(orjson.dumps([span_detail(s) for s in spans], option=orjson.OPT_INDENT_2))
        return
    console = _console()
    for span in spans:
        _print_span(console, span)


@traces.command("tree")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per span, with depth.")
@click.argument("trace_id")
def tree_of_trace(config_path: str | None, as_json: bool, trace_id: str) -> None:
    """One trace as a tree: each step's offset, latency, tokens and cost (subtree totals)."""
    spans = _trace_of(config_path, trace_id)
    roots = build_tree(spans)
    start = min(span.start_time for span in spans)
    out = sys.stdout
    # Iterative depth-first walk: a trace may nest thousands of levels deep.
    stack: list[tuple[TreeNode, str, str, int]] = [(root, "", "", 0) for root in reversed(roots)]
    while stack:
        node, lead, guide, depth = stack.pop()
        if as_json:
            out.write(orjson.dumps(_tree_line(node, start, depth)).decode() + "\n")
        else:
            out.write(f"{lead}{_tree_label(node, start)}\n")
        children = node.children
        for index in range(len(children) - 1, -1, -1):
            last = index == len(children) - 1
            branch = guide + ("└─ " if last else "├─ ")
            stack.append((children[index], branch, guide + ("   " if last else "│  "), depth + 1))
    out.flush()


def _tree_line(node: TreeNode, start: float, depth: int) -> dict[str, Any]:
    span = node.span
    return {
        "depth": depth,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "kind": span.kind,
        "status": span.status,
        "offset_ms": round((span.start_time - start) * 1000.0, 3),
        "latency_ms": round(span.latency_ms, 3),
        "model": span.model,
        "subtree": {
            "input_tokens": node.input_tokens,
            "output_tokens": node.output_tokens,
            "cost_usd": node.cost_usd,
            "unpriced": node.unpriced,
            "errors": node.errors,
        },
    }


def _tree_label(node: TreeNode, start: float) -> str:
    span = node.span
    parts = [
        f"{span.name} [{span.kind}]",
        f"+{(span.start_time - start) * 1000.0:.1f} ms",
        f"{span.latency_ms:.1f} ms",
    ]
    if span.model:
        parts.append(span.model)
    if node.input_tokens or node.output_tokens:
        parts.append(f"tokens {node.input_tokens}/{node.output_tokens}")
    if node.cost_usd:
        parts.append(f"${node.cost_usd:.6f}" + (" + unpriced" if node.unpriced else ""))
    elif node.unpriced:
        parts.append("unpriced")
    if span.status == "error":
        parts.append(f"ERROR {span.error or ''}".rstrip())
    return "  ".join(parts)


def _trace_of(config_path: str | None, trace_or_span_id: str) -> list[Span]:
    repository = open_spans(load_settings(config_path, dict(os.environ)))
    spans = repository.trace_of(trace_or_span_id)
    if not spans:
        raise click.ClickException(f"no trace or span with id {trace_or_span_id!r}")
    return spans


def span_summary(span: Span) -> dict[str, Any]:
    """The fields `traces list --json` promises, one flat object per generation."""
    usage = span.usage.as_dict() if span.usage else None
    return {
        "id": span.trace_id,
        "span_id": span.span_id,
        "time": datetime.fromtimestamp(span.start_time, UTC).isoformat(),
        "name": span.name,
        "alias": span.alias,
        "provider": span.provider,
        "upstream_model": span.model,
        "deployment": span.deployment,
        "status": span.status,
        "status_code": span.status_code,
        "usage": usage
        or {
            "input_tokens": None,
            "output_tokens": None,
            "cache_read_tokens": None,
            "cache_write_tokens": None,
            "reasoning_tokens": None,
            "estimated": False,
        },
        "cost_usd": span.cost_usd,
        "unpriced": span.unpriced,
        "latency_ms": round(span.latency_ms, 3),
        "ttft_ms": None if span.ttft_ms is None else round(span.ttft_ms, 3),
        "stream": span.stream,
        "attempts": len(span.attempts),
        "user": span.user_id,
        "session": span.session_id,
        "tags": span.tags,
        "error": span.error,
    }


def span_detail(span: Span) -> dict[str, Any]:
    """Everything recorded for a span."""
    detail = span_summary(span)
    detail.update(
        parent_span_id=span.parent_span_id,
        kind=span.kind,
        price=span.price,
        metadata=span.metadata,
        params=span.params,
        attempts=[a.as_dict() for a in span.attempts],
        input=span.input,
        output=span.output,
    )
    return detail


def _print_span(console: Console, span: Span) -> None:
    s = span_summary(span)
    console.rule(
        f"[bold]{span.name}[/bold] {span.kind} span {span.span_id} (trace {span.trace_id})"
    )
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    usage = s["usage"]
    rows = [
        ("time", s["time"]),
        ("model", f"{span.alias} -> {span.provider}/{span.model} ({span.deployment})"),
        ("status", f"{span.status} {span.status_code}" + (f": {span.error}" if span.error else "")),
        (
            "latency",
            f"{span.latency_ms:.1f} ms"
            + (f", first token {span.ttft_ms:.1f} ms" if span.ttft_ms is not None else ""),
        ),
        (
            "tokens",
            f"in {usage['input_tokens']}, out {usage['output_tokens']}, cached read "
            f"{usage['cache_read_tokens']}, cache write {usage['cache_write_tokens']}, "
            f"reasoning {usage['reasoning_tokens']}"
            + (" (estimated)" if usage["estimated"] else ""),
        ),
        ("cost", _cost(s)),
        ("user / session", f"{span.user_id or '-'} / {span.session_id or '-'}"),
        ("tags", ", ".join(span.tags) or "-"),
    ]
    if span.parent_span_id:
        rows.append(("parent span", span.parent_span_id))
    for key, value in rows:
        grid.add_row(key, str(value))
    console.print(grid)
    if span.attempts:
        attempts = Table("deployment", "upstream", "outcome", "ms", title="attempts")
        for a in span.attempts:
            attempts.add_row(
                a.deployment, f"{a.provider}/{a.model}", a.outcome, f"{a.latency_ms:.1f}"
            )
        console.print(attempts)
    if span.input is not None:
        console.print("[bold]input[/bold]")
        console.print_json(orjson.dumps(span.input).decode())
    if span.output is not None:
        console.print("[bold]output[/bold]")
        console.print_json(orjson.dumps(span.output).decode())


def _console() -> Console:
    # Piped output has no terminal width; a table folded into 80 columns is unreadable.
    console = Console()
    return console if console.is_terminal else Console(width=160)


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%m-%d %H:%M:%S")


def _num(value: Any, fmt: str = "d") -> str:
    return "" if value is None else format(value, fmt)


def _cost(summary: dict[str, Any]) -> str:
    if summary["unpriced"]:
        return "unpriced"
    cost = summary["cost_usd"]
    return "" if cost is None else f"{cost:.6f}"
