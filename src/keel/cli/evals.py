"""`keel eval`: run eval suites against a running Keel, compare runs, gate CI.

`keel eval run SUITE [--baseline production]` resolves the suite through the REST API
(`--url` or `KEEL_URL`, key in `KEEL_API_KEY` or `KEEL_MASTER_KEY`), calls tasks and judges
through the gateway at the same address, stores every result as it finishes, prints the
results with their intervals (and the comparison with the baseline), and exits 1 when a
gate fails. `--junit` and `--markdown` write reports for CI. A suite that does not parse
exits 2 before anything runs. Unchanged calls come from the local response cache.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from keel.cli.api_client import KeelApi
from keel.cli.eval_api import ApiEvalBackend
from keel.cli.remote import InvalidFiles, RemoteGroup, connect, pass_api, url_option
from keel.core.eval_runs import EvalRun, ItemResult
from keel.evals.comparison import RunComparison, compare_runs, comparison_to_json
from keel.evals.gates import check_all
from keel.evals.gateway_client import GatewayChatModel
from keel.evals.plan import build_task, plan_suite
from keel.evals.registry import EvaluatorConfigError, Services, builtin_registry
from keel.evals.reports import VariantReport, console_report, junit_xml, markdown_report
from keel.evals.response_cache import CachingChatModel, ResponseCache, default_cache_path
from keel.evals.runner import Progress as RunProgress
from keel.evals.runner import Runner, RunSpec
from keel.evals.suite import Suite, SuiteError, Variant, baseline_variant, load_suite
from keel.evals.summary import RunSummary, summarize_run, summary_to_json
from keel.ports import ChatModel
from keel.settings import packaged_prices


class _EvalGroup(RemoteGroup):
    """API errors as one clear failure; a suite that cannot run as exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (SuiteError, EvaluatorConfigError) as exc:
            raise InvalidFiles([f"error: {exc}"]) from None


@click.group("eval", cls=_EvalGroup)
@url_option
@click.pass_context
def eval_group(ctx: click.Context, url: str) -> None:
    """Evaluation: run suites, compare runs, gate CI on quality."""
    connect(ctx, url, timeout_s=120.0)


@eval_group.command("run", short_help="Run a suite; exit 1 when a gate fails.")
@click.argument("suite_path", metavar="SUITE", type=click.Path(path_type=Path))
@click.option("--baseline", default=None, help="Also run the prompt at this label and compare.")
@click.option("--baseline-run", default=None, help="Compare with this stored run instead.")
@click.option("--variant", "variants", multiple=True, help="Run only this variant (repeatable).")
@click.option("--repeat", type=click.IntRange(1, 100), default=None, help="Repetitions per item.")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=None)
@click.option("--resume", default=None, help="Continue an interrupted run (one variant).")
@click.option("--junit", type=click.Path(path_type=Path), default=None, help="Write JUnit XML.")
@click.option("--markdown", type=click.Path(path_type=Path), default=None, help="Write Markdown.")
@click.option("--no-cache", is_flag=True, help="Call every model again (results still cached).")
@click.option(
    "--cache",
    "cache_path",
    type=click.Path(path_type=Path),
    default=None,
    help="The response cache file (default: KEEL_EVAL_CACHE, else ~/.cache/keel/).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@pass_api
def run(
    api: KeelApi,
    suite_path: Path,
    baseline: str | None,
    baseline_run: str | None,
    variants: tuple[str, ...],
    repeat: int | None,
    concurrency: int | None,
    resume: str | None,
    junit: Path | None,
    markdown: Path | None,
    no_cache: bool,
    cache_path: Path | None,
    quiet: bool,
) -> None:
    """Run the suite's variants, compare with a baseline, check the gates."""
    suite = load_suite(suite_path)
    chosen = [suite.variant(name) for name in variants] or list(suite.variants)
    if resume is not None and len(chosen) != 1:
        raise click.UsageError("--resume continues one run: name its --variant")
    if baseline is not None and baseline_run is not None:
        raise click.UsageError("give --baseline or --baseline-run, not both")
    cache_file = cache_path or Path(os.environ.get("KEEL_EVAL_CACHE") or default_cache_path())
    cache = ResponseCache(cache_file)
    options = _Options(not no_cache, repeat, concurrency, baseline, baseline_run, resume, quiet)
    session = _SuiteRun(api, suite, cache, options)
    try:
        reports = asyncio.run(session.run(chosen))
    except KeyboardInterrupt:
        run = session.runners[-1].current if session.runners else None
        if run is not None and run.metadata.get("role") == "baseline":
            click.echo(
                f"interrupted during the baseline run {run.run_id}; run the same command "
                "again: the calls already made come from the cache",
                err=True,
            )
        elif run is not None:
            click.echo(
                f"interrupted: run {run.run_id} keeps its results; continue it with "
                f"keel eval run {suite_path} --variant '{run.variant}' --resume {run.run_id}",
                err=True,
            )
        raise SystemExit(130) from None
    finally:
        cache.close()
    console_report(reports, session.console)
    if junit is not None:
        junit.write_text(junit_xml(suite.name, reports), encoding="utf-8")
    if markdown is not None:
        markdown.write_text(markdown_report(suite.name, reports), encoding="utf-8")
    failed = [r for r in reports if r.failed]
    if failed:
        click.echo(f"eval: {len(failed)} of {len(reports)} variant(s) failed a gate", err=True)
        raise SystemExit(1)


@dataclass(frozen=True, slots=True)
class _Options:
    """How `keel eval run` was asked to run."""

    read_cache: bool
    repeat: int | None
    concurrency: int | None
    baseline: str | None
    baseline_run: str | None
    resume: str | None
    quiet: bool


class _SuiteRun:
    """One `keel eval run`: the suite planned, each variant run (with its baseline) and its
    gates checked. `runners` names the runs started, for the message on Ctrl-C."""

    def __init__(self, api: KeelApi, suite: Suite, cache: ResponseCache, options: _Options) -> None:
        self.suite = suite
        self.options = options
        self.console = Console()
        self.runners: list[Runner] = []
        self._api = api
        self._cache = cache
        self._backend = ApiEvalBackend(api)

    async def run(self, variants: Sequence[Variant]) -> list[VariantReport]:
        """Plan the suite, run each variant (and its baseline), check the gates."""
        api, options = self._api, self.options
        gateway = GatewayChatModel(api.url + "/v1", api.key, prices=packaged_prices())
        model = CachingChatModel(gateway, self._cache, namespace=api.url, read=options.read_cache)
        services = Services(judge=model, judge_model=self.suite.judge_model)
        try:
            specs = plan_suite(
                self._backend, self.suite, model, services=services, variants=variants,
                repeat=options.repeat, concurrency=options.concurrency,
                cache=self._cache if options.read_cache else None, cache_scope=api.url,
            )  # fmt: skip
            return [
                await self._variant(spec, variant, model)
                for spec, variant in zip(specs, variants, strict=True)
            ]
        finally:
            gateway.close()

    async def _variant(self, spec: RunSpec, variant: Variant, model: ChatModel) -> VariantReport:
        names = [e.name for e in spec.evaluators]
        base_run, base_results = await self._baseline(spec, variant, model, names)
        run, results, summary = await self._run_one(spec, names, self.options.resume)
        compare = None if base_results is None else _Comparisons(base_results, results)
        weights = {e.name: e.spec.weight for e in spec.evaluators}
        gates = check_all(self.suite.gates, self.suite.regressions, summary, weights, compare)
        comparison = None if compare is None else compare(0.95)
        return VariantReport(variant.name, run, summary, gates, base_run, comparison)

    async def _baseline(
        self, spec: RunSpec, variant: Variant, model: ChatModel, names: list[str]
    ) -> tuple[EvalRun | None, list[ItemResult] | None]:
        """The run to compare with: a stored one, the prompt at a label (run now), or none."""
        stored, label = self.options.baseline_run, self.options.baseline
        if stored is not None:
            return self._backend.run_now(stored), self._backend.results_now(stored)
        if label is None:
            return None, None
        other = baseline_variant(variant, label)
        if other is None:
            self.console.print(
                f"[yellow]{variant.name}: no prompt to take at {label}; not compared[/yellow]"
            )
            return None, None
        task = build_task(self._backend, self.suite, other, model)
        base_spec = replace(
            spec, name=f"{self.suite.name} / {other.name}", task=task, variant=other.name,
            metadata={"role": "baseline", "label": label},
        )  # fmt: skip
        base_run, base_results, _ = await self._run_one(base_spec, names, None)
        return base_run, base_results

    async def _run_one(
        self, spec: RunSpec, names: list[str], resume: str | None
    ) -> tuple[EvalRun, list[ItemResult], RunSummary]:
        """Run one spec with a progress bar: the run, its results and their summary."""
        summaries: list[RunSummary] = []

        def summarise(run: EvalRun, results: list[ItemResult]) -> dict[str, Any]:
            summaries.append(summarize_run(results, evaluators=names))
            return summary_to_json(summaries[-1])

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[cached]} cached, {task.fields[failed]} failed"),
            TimeRemainingColumn(),
            console=self.console,
            disable=self.options.quiet,
            transient=False,
        ) as bar:
            total = len(spec.dataset.items) * spec.repeat
            task_id = bar.add_task(spec.name, total=total, cached=0, failed=0)

            def on_progress(progress: RunProgress) -> None:
                bar.update(
                    task_id,
                    completed=total - progress.total + progress.done,
                    cached=progress.cached,
                    failed=progress.failed,
                )

            runner = Runner(self._backend, summarise=summarise, on_progress=on_progress)
            self.runners.append(runner)
            run = await runner.run(spec, resume=resume)
        return run, runner.results, summaries[-1]


class _Comparisons:
    """The candidate against the baseline, computed once per confidence level asked for."""

    def __init__(self, baseline: list[ItemResult], candidate: list[ItemResult]) -> None:
        self._baseline = baseline
        self._candidate = candidate
        self._done: dict[float, RunComparison] = {}

    def __call__(self, confidence: float) -> RunComparison:
        if confidence not in self._done:
            self._done[confidence] = compare_runs(
                self._baseline, self._candidate, confidence=confidence
            )
        return self._done[confidence]


@eval_group.command("runs", short_help="Recent eval runs.")
@click.option("--suite", default=None, help="Only this suite's runs.")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_api
def list_runs(api: KeelApi, suite: str | None, limit: int, as_json: bool) -> None:
    """List runs, newest first."""
    query = {"limit": str(limit)}
    if suite:
        query["suite"] = suite
    runs = api.get("/api/evals/runs", query)["data"]
    if as_json:
        click.echo(orjson.dumps(runs, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(show_edge=False)
    for column in ("run", "name", "dataset", "status", "items", "task"):
        table.add_column(column)
    for doc in runs:
        summary = doc.get("summary") or {}
        task = doc.get("task") or {}
        table.add_row(
            doc["run_id"],
            doc["name"],
            f"{doc['dataset']} v{doc['dataset_version']}",
            doc["status"],
            str(summary.get("items", "–")),
            " ".join(str(task[k]) for k in ("prompt", "version", "model") if task.get(k)),
        )
    Console().print(table)


@eval_group.command("compare", short_help="Compare two stored runs.")
@click.argument("baseline_id", metavar="BASELINE_RUN")
@click.argument("candidate_id", metavar="CANDIDATE_RUN")
@click.option("--json", "as_json", is_flag=True)
@pass_api
def compare_command(api: KeelApi, baseline_id: str, candidate_id: str, as_json: bool) -> None:
    """Candidate against baseline: differences with intervals and the regressed items."""
    backend = ApiEvalBackend(api)
    base_run, cand_run = backend.run_now(baseline_id), backend.run_now(candidate_id)
    base, cand = backend.results_now(baseline_id), backend.results_now(candidate_id)
    comparison = compare_runs(base, cand)
    if as_json:
        click.echo(
            orjson.dumps(comparison_to_json(comparison), option=orjson.OPT_INDENT_2).decode()
        )
        return
    names = [str(e["name"]) for e in cand_run.evaluators]
    summary = summarize_run(cand, evaluators=names)
    report = VariantReport(
        cand_run.variant or cand_run.name, cand_run, summary, (), base_run, comparison
    )
    console_report([report], Console())


@eval_group.command("evaluators", short_help="The evaluator types there are.")
def evaluators() -> None:
    """List every built-in evaluator type with its default threshold."""
    table = Table(show_edge=False)
    for column in ("type", "threshold", "what it checks"):
        table.add_column(column)
    for kind in builtin_registry().types():
        table.add_row(kind.name, f"{kind.threshold:g}", kind.summary.strip().split("\n")[0])
    Console().print(table)
