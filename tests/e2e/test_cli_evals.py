"""`keel eval run`: the example suite end to end through a running Keel and the fake upstream.

The flow a team runs in CI: the prompt file in the working tree is the candidate, the
registry's `production` label the baseline. Unchanged, the gates pass; with the example
regression (the prompt stops passing the retrieved context), the comparison shows the drop
with its interval and the command exits 1, writing JUnit and Markdown that say which rule
failed. The runs are visible through the REST API, each item in its own trace.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import httpx2 as httpx
import orjson
import pytest
from click.testing import CliRunner, Result

from keel.cli.main import cli
from keel.testing import FakeUpstream
from keel.testing.behavior import Behavior
from tests.e2e.conftest import RunningKeel

EXAMPLES = Path(__file__).parents[2] / "examples"
ITEMS = 12  # examples/evals/rag_qa.jsonl


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of examples/prompts and examples/evals, as a repository would hold them."""
    work = tmp_path / "project"
    shutil.copytree(EXAMPLES / "prompts", work / "prompts")
    shutil.copytree(EXAMPLES / "evals", work / "evals")
    return work


def _keel(url: str, project: Path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    env = {
        "KEEL_URL": url,
        "KEEL_API_KEY": None,
        "KEEL_MASTER_KEY": None,
        "COLUMNS": "200",
        "KEEL_EVAL_CACHE": str(project / "cache.sqlite"),
    }

    def run(*args: str) -> Result:
        return runner.invoke(cli, list(args), env=env, catch_exceptions=False)

    return run


def _regress(project: Path) -> None:
    """The example regression: the user message no longer carries the retrieved context."""
    path = project / "prompts" / "rag_qa.yaml"
    text = path.read_text()
    old = 'content: "Context:\\n{{ context }}\\n\\nQuestion: {{ query }}"'
    assert old in text
    path.write_text(text.replace(old, 'content: "Question: {{ query }}"'))


def test_a_changed_prompt_is_compared_with_production_and_gated(
    keel: RunningKeel, fake: FakeUpstream, project: Path
) -> None:
    run = _keel(keel.url, project)
    assert run("prompts", "push", str(project / "prompts"), "-m", "first").exit_code == 0
    assert run("prompts", "label", "rag_qa", "1", "production").exit_code == 0
    suite = str(project / "evals" / "rag_qa_suite.yaml")
    junit, markdown = project / "junit.xml", project / "report.md"

    same = run("eval", "run", suite, "--baseline", "production", "--quiet",
               "--junit", str(junit), "--markdown", str(markdown))  # fmt: skip
    assert same.exit_code == 0, same.output
    assert "answers" in same.output and "no significant change" in same.output
    assert "PASSED" in same.output and "FAILED" not in same.output
    assert fake.request_count == 2 * ITEMS  # baseline and candidate, one call per item
    root = ElementTree.parse(junit).getroot()
    assert sum(int(s.get("failures") or 0) for s in root) == 0
    assert markdown.read_text().startswith("# Eval: rag_qa — passed")

    _regress(project)
    worse = run("eval", "run", suite, "--baseline", "production", "--quiet",
                "--junit", str(junit), "--markdown", str(markdown))  # fmt: skip
    assert worse.exit_code == 1, worse.output
    assert "regressed" in worse.output
    assert "-1.000 [-1.000, -1.000]" in worse.output  # cites: no answer cites a source now
    assert "failed a gate" in worse.output
    # the baseline came from the cache: only the changed candidate called the model
    assert fake.request_count == 3 * ITEMS
    failed = [
        case.get("name")
        for suite_element in ElementTree.parse(junit).getroot()
        for case in suite_element
        if case.find("failure") is not None
    ]
    assert "answers pass_rate >= 0.9" in failed
    assert any(name and name.startswith("answers: any evaluator mean not worse") for name in failed)
    report = markdown.read_text()
    assert report.startswith("# Eval: rag_qa — FAILED")
    assert "Echo: Question: How long do I have to return an item?" in report

    # the same runs through the REST API
    runs = httpx.get(keel.url + "/api/evals/runs", params={"suite": "rag_qa"}).json()["data"]
    assert len(runs) == 4 and all(r["status"] == "finished" for r in runs)
    candidate = runs[0]
    assert candidate["task"]["file"].endswith("rag_qa.yaml")
    # only the two questions that contain their own answer ("Canada", "PayPal") still pass
    assert candidate["summary"]["evaluators"]["answers"]["pass_rate"]["value"] == 2 / ITEMS
    baseline = next(r for r in runs if r["variant"] == "default@production")
    assert baseline["task"]["version"] == 1 and baseline["task"]["label"] == "production"
    results = httpx.get(keel.url + f"/api/evals/runs/{candidate['run_id']}/results").json()
    first = results["data"][0]
    assert first["verdicts"]["answers"]["passed"] is False
    # the item's trace holds its root span and, nested under it, the gateway's generation
    spans = keel.trace_spans(first["trace_id"], 2)
    root_span = next(s for s in spans if s.span_id == first["span_id"])
    generation = next(s for s in spans if s.kind == "generation")
    assert generation.parent_span_id == root_span.span_id
    assert root_span.attributes["keel.eval.run_id"] == candidate["run_id"]

    # the stored runs from the CLI: listed, compared again, and resumed (nothing left to do)
    listed = run("eval", "runs", "--suite", "rag_qa")
    assert listed.exit_code == 0 and candidate["run_id"] in listed.output
    compared = run("eval", "compare", baseline["run_id"], candidate["run_id"])
    assert compared.exit_code == 0, compared.output
    assert "regressed" in compared.output and "-1.000 [-1.000, -1.000]" in compared.output
    as_json = run("eval", "compare", baseline["run_id"], candidate["run_id"], "--json")
    verdicts = {k: v["verdict"] for k, v in orjson.loads(as_json.output)["evaluators"].items()}
    assert verdicts["cites"] == "regressed" and verdicts["no_refusal"] == "no significant change"
    resumed = run("eval", "run", suite, "--quiet", "--resume", candidate["run_id"])
    assert resumed.exit_code == 1  # the same results, so the same failed gate
    assert fake.request_count == 3 * ITEMS  # nothing was left to call


def test_the_evaluator_types_are_listed(keel: RunningKeel, project: Path) -> None:
    listed = _keel(keel.url, project)("eval", "evaluators")
    assert listed.exit_code == 0
    for name in ("contains", "json_schema", "semantic_similarity", "g_eval", "faithfulness"):
        assert name in listed.output


def test_a_suite_with_a_mistake_exits_2_before_anything_runs(
    keel: RunningKeel, fake: FakeUpstream, project: Path
) -> None:
    suite = project / "evals" / "rag_qa_suite.yaml"
    suite.write_text(suite.read_text().replace("{type: rouge_l,", "{type: rogue_l,"))
    result = _keel(keel.url, project)("eval", "run", str(suite))
    assert result.exit_code == 2
    assert "unknown evaluator type 'rogue_l'; did you mean 'rouge_l'?" in result.output
    assert fake.request_count == 0


def test_judge_calls_go_through_the_gateway_inside_the_items_trace(
    keel: RunningKeel, fake: FakeUpstream, tmp_path: Path
) -> None:
    (tmp_path / "qa.jsonl").write_text(
        '{"id": "a", "input": "Where is my parcel?", "expected": "in transit"}\n'
        '{"id": "b", "input": "Can I return it?", "expected": "within 30 days"}\n'
    )
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: judged\n"
        "dataset: {file: qa.jsonl, name: judged_qa}\n"
        "task: {model: fast}\n"
        "judge: {model: claude}\n"
        "evaluators:\n"
        '  - {type: llm_rubric, name: helpful, params: {rubric: "Does it help?"}}\n'
    )
    grades = ['{"reason": "Helpful.", "score": 5}', '{"reason": "Vague.", "score": 2}']
    fake.enqueue(*(Behavior(reply=g) for g in grades), path="/v1/messages")
    result = _keel(keel.url, tmp_path)("eval", "run", str(suite), "--quiet")
    assert result.exit_code == 0, result.output
    runs = httpx.get(keel.url + "/api/evals/runs", params={"suite": "judged"}).json()["data"]
    results = httpx.get(keel.url + f"/api/evals/runs/{runs[0]['run_id']}/results").json()["data"]
    scores = sorted(r["verdicts"]["helpful"]["score"] for r in results)
    assert scores == [0.25, 1.0]  # grades 2 and 5 on the 1-5 scale
    for item in results:
        spans = keel.trace_spans(item["trace_id"], 3)  # the item, the task call, the judge call
        generations = [s for s in spans if s.kind == "generation"]
        assert {s.alias for s in generations} == {"fast", "claude"}
        assert all(s.parent_span_id == item["span_id"] for s in generations)
        assert all("eval" in s.tags for s in generations)


def test_ctrl_c_keeps_the_results_and_resume_finishes_the_run(
    keel: RunningKeel, fake: FakeUpstream, tmp_path: Path
) -> None:
    items = "".join(f'{{"id": "q{i}", "input": "question {i}"}}\n' for i in range(12))
    (tmp_path / "qa.jsonl").write_text(items)
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: slow\ndataset: {file: qa.jsonl, name: slow_qa}\ntask: {model: fast}\n"
        "concurrency: 2\nevaluators: [{type: contains, params: {value: question}}]\n"
    )
    fake.default = Behavior(latency_s=0.3)
    env = {
        **os.environ,
        "KEEL_URL": keel.url,
        "KEEL_EVAL_CACHE": str(tmp_path / "cache.sqlite"),
        "KEEL_API_KEY": "",
        "KEEL_MASTER_KEY": "",
    }
    command = [sys.executable, "-m", "keel.cli.main", "eval", "run", str(suite), "--quiet"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while fake.request_count < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err.decode()
    message = err.decode()
    assert "keeps its results; continue it with" in message
    run_id = message.rsplit("--resume ", 1)[1].split()[0]
    stored = httpx.get(f"{keel.url}/api/evals/runs/{run_id}").json()
    assert stored["status"] == "interrupted"
    kept = len(httpx.get(f"{keel.url}/api/evals/runs/{run_id}/completed").json()["data"])
    assert 2 <= kept < 12
    calls_before = fake.request_count
    resumed = subprocess.run(
        [*command, "--variant", "default", "--resume", run_id], env=env, capture_output=True
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    finished = httpx.get(f"{keel.url}/api/evals/runs/{run_id}").json()
    assert finished["status"] == "finished" and finished["summary"]["items"] == 12
    # only what was missing was called again (plus what the interruption cut off)
    assert fake.request_count - calls_before <= 12 - kept
