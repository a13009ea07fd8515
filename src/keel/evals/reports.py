"""Eval reports for people and for CI: a console table, Markdown, and JUnit XML.

One `VariantReport` per variant of a suite: its run and summary, the baseline run and the
comparison when there is one, and the gate results. The console and Markdown reports show
every figure with its interval; JUnit XML has one test case per gate rule, so a CI system
lists which rule failed and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from xml.etree import ElementTree

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from keel.core.eval_runs import EvalRun
from keel.core.stats import Estimate
from keel.evals.comparison import RunComparison
from keel.evals.gates import GateResult
from keel.evals.summary import RunSummary

_MAX_OUTPUT = 160


@dataclass(frozen=True, slots=True)
class VariantReport:
    """What one variant's run showed."""

    variant: str
    run: EvalRun
    summary: RunSummary
    gates: Sequence[GateResult]
    baseline: EvalRun | None = None
    comparison: RunComparison | None = None

    @property
    def failed(self) -> bool:
        """True when a gate failed."""
        return any(g.failed for g in self.gates)


def interval(estimate: Estimate | None, signed: bool = False, percent: bool = False) -> str:
    """`0.812 [0.774, 0.850]` (or `81.2% [...]`, `+0.012 [...]`); `–` when unknown."""
    if estimate is None:
        return "–"

    def fmt(value: float) -> str:
        if percent:
            return f"{value * 100:+.1f}%" if signed else f"{value * 100:.1f}%"
        return f"{value:+.3f}" if signed else f"{value:.3f}"

    if estimate.low is None or estimate.high is None:
        return fmt(estimate.value)
    return f"{fmt(estimate.value)} [{fmt(estimate.low)}, {fmt(estimate.high)}]"


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"


def _clip(text: str | None) -> str:
    if text is None:
        return "–"
    text = " ".join(text.split())
    return text if len(text) <= _MAX_OUTPUT else text[: _MAX_OUTPUT - 1] + "…"


def console_report(reports: Sequence[VariantReport], console: Console) -> None:
    """Print every variant's results, comparison and gates."""
    for report in reports:
        console.print(Group(*_console_parts(report)))
        console.print()


def _console_parts(report: VariantReport) -> list[Table | Text]:
    summary, run = report.summary, report.run
    pct = f"{summary.confidence:.0%}"
    head = Text.assemble(
        (f"{run.name}", "bold"),
        f"  run {run.run_id}  {run.dataset} v{run.dataset_version}  "
        f"{summary.items} items × {summary.repetitions} repetition(s)",
    )
    table = Table(title=None, show_edge=False)
    for column in ("evaluator", f"mean [{pct} CI]", f"pass rate [{pct} CI]", "errors", "flaky"):
        table.add_column(column)
    for entry in summary.evaluators:
        table.add_row(
            entry.name,
            interval(entry.mean_score),
            interval(entry.pass_rate, percent=True),
            str(entry.errors),
            str(len(entry.flaky_items)),
        )
    facts = Text(
        f"latency p50 {_ms(summary.latency_p50_ms)}, p95 {_ms(summary.latency_p95_ms)}; "
        f"cost {_money(summary.cost.total_usd)}"
        + (f" ({summary.cost.unknown} calls unpriced)" if summary.cost.unknown else "")
        + f"; task errors {summary.task_errors}"
    )
    parts: list[Table | Text] = [head, table, facts]
    if report.comparison is not None and report.baseline is not None:
        parts.extend(_comparison_parts(report.comparison, report.baseline))
    gates = Table(show_edge=False, title=None)
    gates.add_column("gate")
    gates.add_column("result")
    gates.add_column("why")
    for gate in report.gates:
        style = {"passed": "green", "failed": "bold red", "skipped": "yellow"}[gate.outcome]
        gates.add_row(gate.rule, Text(gate.outcome.upper(), style=style), gate.detail)
    if report.gates:
        parts.append(gates)
    return parts


def _comparison_parts(comparison: RunComparison, baseline: EvalRun) -> list[Table | Text]:
    pct = f"{comparison.confidence:.0%}"
    table = Table(show_edge=False)
    for column in (
        "evaluator", "baseline", "candidate", f"Δ mean [{pct} CI]",
        f"Δ pass rate [{pct} CI]", "McNemar p", "verdict",
    ):  # fmt: skip
        table.add_column(column)
    for entry in comparison.evaluators:
        style = {"regressed": "bold red", "improved": "green"}.get(entry.verdict, "")
        table.add_row(
            entry.name,
            "–" if entry.baseline_mean is None else f"{entry.baseline_mean:.3f}",
            "–" if entry.candidate_mean is None else f"{entry.candidate_mean:.3f}",
            interval(entry.mean_difference, signed=True),
            interval(entry.pass_rate_difference, signed=True, percent=True),
            "–" if entry.mcnemar_p is None else f"{entry.mcnemar_p:.3g}",
            Text(entry.verdict, style=style),
        )
    parts: list[Table | Text] = [
        Text(f"against baseline {baseline.name} (run {baseline.run_id}), "
             f"{comparison.paired_items} paired items", style="bold"),
        table,
    ]  # fmt: skip
    latency, cost = comparison.latency, comparison.cost
    parts.append(
        Text(
            f"latency Δ median {interval(latency.median_difference_ms, signed=True)} ms; "
            f"cost Δ per item {interval(cost.mean_difference_usd, signed=True)} USD"
        )
    )
    for note in comparison.notes:
        parts.append(Text(f"note: {note}", style="yellow"))
    if comparison.regressed_items:
        worst = Table(show_edge=False, title="items that regressed most")
        for column in ("item", "evaluator", "drop", "baseline output", "candidate output"):
            worst.add_column(column, overflow="fold")
        for item in comparison.regressed_items[:5]:
            drop = item.score_drop if item.score_drop is not None else item.pass_drop
            worst.add_row(
                item.item_id,
                item.evaluator,
                f"{drop:.2f}",
                _clip(item.baseline_output or item.baseline_error),
                _clip(item.candidate_output or item.candidate_error),
            )
        parts.append(worst)
    return parts


def markdown_report(suite: str, reports: Sequence[VariantReport]) -> str:
    """The whole suite's results as Markdown (for a pull-request comment or CI summary)."""
    failed = any(r.failed for r in reports)
    lines = [f"# Eval: {suite} — {'FAILED' if failed else 'passed'}", ""]
    for report in reports:
        summary, run = report.summary, report.run
        pct = f"{summary.confidence:.0%}"
        lines += [
            f"## {run.name}",
            "",
            f"Run `{run.run_id}` on `{run.dataset}` v{run.dataset_version}: "
            f"{summary.items} items × {summary.repetitions} repetition(s); latency p50 "
            f"{_ms(summary.latency_p50_ms)}, p95 {_ms(summary.latency_p95_ms)}; cost "
            f"{_money(summary.cost.total_usd)}; task errors {summary.task_errors}.",
            "",
            f"| evaluator | mean [{pct} CI] | pass rate [{pct} CI] | errors |",
            "|---|---|---|---|",
        ]
        for entry in summary.evaluators:
            lines.append(
                f"| {entry.name} | {interval(entry.mean_score)} | "
                f"{interval(entry.pass_rate, percent=True)} | {entry.errors} |"
            )
        comparison = report.comparison
        if comparison is not None and report.baseline is not None:
            lines += [
                "",
                f"Against baseline `{report.baseline.name}` (run `{report.baseline.run_id}`), "
                f"{comparison.paired_items} paired items:",
                "",
                f"| evaluator | Δ mean [{pct} CI] | Δ pass rate [{pct} CI] | McNemar p | verdict |",
                "|---|---|---|---|---|",
            ]
            for change in comparison.evaluators:
                p = "–" if change.mcnemar_p is None else f"{change.mcnemar_p:.3g}"
                lines.append(
                    f"| {change.name} | {interval(change.mean_difference, signed=True)} | "
                    f"{interval(change.pass_rate_difference, signed=True, percent=True)} | "
                    f"{p} | {change.verdict} |"
                )
            if comparison.regressed_items:
                lines += [
                    "",
                    "| item | evaluator | baseline output | candidate output |",
                    "|---|---|---|---|",
                ]
                for item in comparison.regressed_items[:10]:
                    base = _clip(item.baseline_output or item.baseline_error).replace("|", "\\|")
                    cand = _clip(item.candidate_output or item.candidate_error).replace("|", "\\|")
                    lines.append(f"| {item.item_id} | {item.evaluator} | {base} | {cand} |")
        if report.gates:
            lines += ["", "| gate | result | why |", "|---|---|---|"]
            for gate in report.gates:
                lines.append(f"| {gate.rule} | **{gate.outcome}** | {gate.detail} |")
        lines.append("")
    return "\n".join(lines)


def junit_xml(suite: str, reports: Sequence[VariantReport]) -> str:
    """JUnit XML: one test suite per variant, one test case per gate rule."""
    root = ElementTree.Element("testsuites", name=f"keel eval {suite}")
    for report in reports:
        cases = report.gates
        element = ElementTree.SubElement(
            root,
            "testsuite",
            name=report.run.name,
            tests=str(len(cases)),
            failures=str(sum(g.failed for g in cases)),
            skipped=str(sum(g.outcome == "skipped" for g in cases)),
        )
        for gate in cases:
            case = ElementTree.SubElement(
                element, "testcase", classname=report.run.name, name=gate.rule
            )
            if gate.failed:
                ElementTree.SubElement(case, "failure", message=gate.detail).text = gate.detail
            elif gate.outcome == "skipped":
                ElementTree.SubElement(case, "skipped", message=gate.detail)
            else:
                ElementTree.SubElement(case, "system-out").text = gate.detail
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
