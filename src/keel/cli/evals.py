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
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from keel.cli.api_client import DEFAULT_URL, ApiError, KeelApi
from keel.cli.eval_api import ApiEvalBackend
from keel.cli.prompts import InvalidFiles, api_failure
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
from keel.evals.summary import summarize_run, summary_to_json
from keel.ports import ChatModel
from keel.settings import packaged_prices


class _EvalGroup(click.Group):
    """Turns API errors into one clear failure, and suite errors into exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            raise api_failure(exc) from None
        except (SuiteError, EvaluatorConfigError) as exc:
            raise InvalidFiles([f"error: {exc}"]) from None


@click.group("eval", cls=_EvalGroup)
@click.option(
    "--url",
    envvar="KEEL_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="The running Keel (also KEEL_URL); the key comes from KEEL_API_KEY or KEEL_MASTER_KEY.",
)
@click.pass_context
def eval_group(ctx: click.Context, url: str) -> None:
    """Evaluation: run suites, compare runs, gate CI on quality."""
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="'--url'")
    key = os.environ.get("KEEL_API_KEY") or os.environ.get("KEEL_MASTER_KEY") or None
    ctx.obj = KeelApi(url.rstrip("/"), key, timeout_s=120.0)


pass_api = click.make_pass_decorator(KeelApi)


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
    console = Console()
    cache_file = cache_path or Path(os.environ.get("KEEL_EVAL_CACHE") or default_cache_path())
    cache = ResponseCache(cache_file)
    runners: list[Runner] = []
    try:
        reports = asyncio.run(
            _run_suite(api, suite, chosen, cache, not no_cache, repeat, concurrency, baseline,
                       baseline_run, resume, console, quiet, runners)
        )  # fmt: skip
    except KeyboardInterrupt:
        run = runners[-1].current if runners else None
        if run is not None:
            click.echo(
                f"interrupted: run {run.run_id} keeps its results; continue it with "
                f"keel eval run {suite_path} --variant '{run.variant}' --resume {run.run_id}",
                err=True,
            )
        raise SystemExit(130) from None
    finally:
        cache.close()
    console_report(reports, console)
    if junit is not None:
        junit.write_text(junit_xml(suite.name, reports), encoding="utf-8")
    if markdown is not None:
        markdown.write_text(markdown_report(suite.name, reports), encoding="utf-8")
    failed = [r for r in reports if r.failed]
    if failed:
        click.echo(f"eval: {len(failed)} of {len(reports)} variant(s) failed a gate", err=True)
        raise SystemExit(1)


async def _run_suite(
    api: KeelApi,
    suite: Suite,
    variants: Sequence[Variant],
    cache: ResponseCache,
    read_cache: bool,
    repeat: int | None,
    concurrency: int | None,
    baseline: str | None,
    baseline_run: str | None,
    resume: str | None,
    console: Console,
    quiet: bool,
    runners: list[Runner],
) -> list[VariantReport]:
    """Plan the suite, run each variant (and its baseline), check the gates."""
    backend = ApiEvalBackend(api)
    gateway = GatewayChatModel(api.url + "/v1", api.key, prices=packaged_prices())
    model = CachingChatModel(gateway, cache, namespace=api.url, read=read_cache)
    services = Services(judge=model, judge_model=suite.judge_model)
    try:
        plan = plan_suite(
            backend, suite, model, services=services, variants=variants, repeat=repeat,
            concurrency=concurrency, cache=cache if read_cache else None, cache_scope=api.url,
        )  # fmt: skip
        return await _run_variants(
            backend, suite, plan.specs, variants, model, baseline, baseline_run, resume,
            console, quiet, runners,
        )  # fmt: skip
    finally:
        gateway.close()


async def _run_variants(
    backend: ApiEvalBackend,
    suite: Suite,
    specs: Sequence[RunSpec],
    variants: Sequence[Variant],
    model: ChatModel,
    baseline: str | None,
    baseline_run: str | None,
    resume: str | None,
    console: Console,
    quiet: bool,
    runners: list[Runner],
) -> list[VariantReport]:
    reports = []
    names = [e.name for e in specs[0].evaluators] if specs else []
    weights = {e.name: e.spec.weight for e in specs[0].evaluators} if specs else {}
    for spec, variant in zip(specs, variants, strict=True):
        base_run: EvalRun | None = None
        base_results: list[ItemResult] | None = None
        if baseline_run is not None:
            base_run = backend.run_now(baseline_run)
            base_results = backend.results_now(baseline_run)
        elif baseline is not None:
            other = baseline_variant(variant, baseline)
            if other is None:
                console.print(f"[yellow]{variant.name}: no prompt to take at {baseline}; "
                              "not compared[/yellow]")  # fmt: skip
            else:
                task = build_task(backend, suite, other, model)
                base_spec = replace(
                    spec, name=f"{suite.name} / {other.name}", task=task, variant=other.name,
                    metadata={"role": "baseline", "label": baseline},
                )  # fmt: skip
                base_run = await _run_one(backend, base_spec, names, None, console, quiet, runners)
                base_results = await backend.results(base_run.run_id)
        run = await _run_one(backend, spec, names, resume, console, quiet, runners)
        results = await backend.results(run.run_id)
        summary = summarize_run(results, evaluators=names)
        compare = None if base_results is None else _Comparisons(base_results, results)
        gates = check_all(suite.gates, suite.regressions, summary, weights, compare)
        comparison = None if compare is None else compare(0.95)
        reports.append(VariantReport(variant.name, run, summary, gates, base_run, comparison))
    return reports


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


async def _run_one(
    backend: ApiEvalBackend,
    spec: RunSpec,
    names: list[str],
    resume: str | None,
    console: Console,
    quiet: bool,
    runners: list[Runner],
) -> EvalRun:
    def summarise(run: EvalRun, results: list[ItemResult]) -> dict[str, Any]:
        return summary_to_json(summarize_run(results, evaluators=names))

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[cached]} cached, {task.fields[failed]} failed"),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
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

        runner = Runner(backend, summarise=summarise, on_progress=on_progress)
        runners.append(runner)
        return await runner.run(spec, resume=resume)


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
