"""Gates and reports: absolute and regression rules, and what CI reads (JUnit, Markdown)."""

from __future__ import annotations

from xml.etree import ElementTree

from keel.core.eval_runs import EvalRun, ItemResult
from keel.core.evaluation import Verdict
from keel.evals.comparison import compare_runs
from keel.evals.gates import check_all, metric_value
from keel.evals.reports import VariantReport, junit_xml, markdown_report
from keel.evals.suite import Gate, RegressionRule
from keel.evals.summary import summarize_run


def _results(scores: dict[str, list[float]], output: str = "ok") -> list[ItemResult]:
    n = len(next(iter(scores.values())))
    return [
        ItemResult(
            item_id=f"i{i}",
            repetition=0,
            output=f"{output} {i}",
            latency_ms=100.0,
            verdicts={
                name: Verdict(values[i], passed=values[i] >= 0.5) for name, values in scores.items()
            },
        )
        for i in range(n)
    ]


def _run(name: str) -> EvalRun:
    return EvalRun("r-" + name, name, "qa", 1, {}, (), 1, "finished", 0.0)


GOOD = {"answers": [1.0] * 30, "style": [0.8] * 30}
WORSE = {"answers": [1.0] * 10 + [0.0] * 20, "style": [0.8] * 30}


def test_absolute_gates_use_the_point_estimates_and_overall_is_weighted() -> None:
    summary = summarize_run(_results(WORSE))
    assert metric_value(summary, "answers", "mean", {}) == 1 / 3
    overall = metric_value(summary, "overall", "mean", {"answers": 1.0, "style": 3.0})
    assert abs(overall - (1 / 3 + 3 * 0.8) / 4) < 1e-9
    results = check_all(
        (Gate("answers", "pass_rate", min=0.9), Gate("style", "mean", min=0.5, max=0.9)),
        (),
        summary,
        {},
        None,
    )
    assert [r.outcome for r in results] == ["failed", "passed"]
    assert results[0].detail == "answers pass_rate = 0.333"


def test_a_regression_rule_fails_only_the_evaluator_that_got_worse() -> None:
    baseline, candidate = _results(GOOD), _results(WORSE)
    rule = RegressionRule(None, "mean", 0.02, 0.95)
    results = check_all(
        (), (rule,), summarize_run(candidate), {},
        lambda confidence: compare_runs(baseline, candidate, confidence=confidence),
    )  # fmt: skip
    outcome = {r.rule.split(":")[0]: r.outcome for r in results}
    assert outcome == {"answers": "failed", "style": "passed"}
    assert "upper bound is below −0.02" in results[0].detail


def test_no_regression_when_the_runs_agree_and_skipped_without_a_baseline() -> None:
    runs = _results(GOOD)
    rule = RegressionRule(("answers",), "pass_rate", 0.0, 0.9)
    same = check_all(
        (), (rule,), summarize_run(runs), {}, lambda c: compare_runs(runs, runs, confidence=c)
    )
    assert [r.outcome for r in same] == ["passed"]
    (skipped,) = check_all((), (rule,), summarize_run(runs), {}, None)
    assert skipped.outcome == "skipped" and not skipped.failed


def test_junit_and_markdown_name_the_failed_rule() -> None:
    baseline, candidate = _results(GOOD, "Paris"), _results(WORSE, "I don't know")
    comparison = compare_runs(baseline, candidate)
    summary = summarize_run(candidate)
    gates = check_all(
        (Gate("answers", "pass_rate", min=0.9),),
        (RegressionRule(None, "mean", 0.02, 0.95),),
        summary,
        {},
        lambda c: comparison,
    )
    report = VariantReport(
        "default", _run("rag / default"), summary, gates, _run("prod"), comparison
    )
    assert report.failed
    root = ElementTree.fromstring(junit_xml("rag", [report]))
    (suite,) = root
    assert suite.get("failures") == "2" and suite.get("tests") == "3"
    failed = [case.get("name") for case in suite if case.find("failure") is not None]
    assert failed[0] == "answers pass_rate >= 0.9"
    assert failed[1] is not None and failed[1].startswith("answers: any evaluator mean not worse")
    markdown = markdown_report("rag", [report])
    assert markdown.startswith("# Eval: rag — FAILED")
    assert "| answers | -0.667 [" in markdown and "| regressed |" in markdown
    assert "Paris" in markdown and "I don't know" in markdown
