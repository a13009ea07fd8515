"""`keel datasets`: files pushed, read and pulled from the CLI over HTTP against a running Keel.

Each test writes dataset files into a scratch folder, runs `keel datasets ...` there with
KEEL_URL pointing at the server, and checks what the user sees: the lines printed, the
exit code, and what the server then holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest
from click.testing import CliRunner, Result

from keel.cli.main import cli
from keel.core.datasets import derived_item_id
from tests.e2e.conftest import RunningKeel, free_port

Keel = Callable[..., Result]
GOLDEN = (
    '{"id": "w1", "input": {"question": "How long is the warranty?"}, "expected": "Two years.",'
    ' "context": ["The warranty lasts two years."]}\n'
    '{"input": "Hello", "metadata": {"topic": "greeting"}}\n'
)


def runner_for(url: str, **env: str | None) -> Keel:
    runner = CliRunner()
    base: dict[str, str | None] = {
        "KEEL_URL": url,
        "KEEL_API_KEY": None,
        "KEEL_MASTER_KEY": None,
        "COLUMNS": "240",
        "USER": "dana",
        "GIT_CONFIG_NOSYSTEM": "1",
        **env,
    }

    def run(*args: str) -> Result:
        return runner.invoke(cli, ["datasets", *args], env=base)

    return run


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / ".no-gitconfig"))
    (tmp_path / "golden.jsonl").write_text(GOLDEN)
    return tmp_path


@pytest.fixture
def keel_cli(keel: RunningKeel, workdir: Path) -> Keel:
    return runner_for(keel.url)


def lines(output: str) -> list[str]:
    return [re.sub(r"\s{2,}", "  ", line.strip()) for line in output.splitlines()]


def table_rows(output: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


def test_push_edit_and_read_back(keel: RunningKeel, keel_cli: Keel, workdir: Path) -> None:
    first = keel_cli("push", "golden.jsonl", "--name", "golden", "-m", "first cut")
    assert first.exit_code == 0, first.output
    assert lines(first.stdout) == ["golden created v1 (new): 2 items; 2 added"]
    again = keel_cli("push", "golden.jsonl", "--name", "golden")
    assert lines(again.stdout) == ["golden unchanged (v1): 2 items. Nothing new."]

    (workdir / "golden.yaml").write_text(
        "- id: w1\n"
        '  input: {question: "How long is the warranty?"}\n'
        "  expected: 2 years\n"
        "- input: Bye\n"
    )
    dry = keel_cli("push", "golden.yaml", "--name", "golden", "--dry-run")
    assert lines(dry.stdout) == [
        "golden would create v2 (was v1): 2 items; 1 added, 1 removed, 1 changed",
        "Dry run: nothing was written.",
    ]
    second = keel_cli("push", "golden.yaml", "--name", "golden", "-m", "fix w1")
    assert lines(second.stdout)[0].startswith("golden created v2 (was v1)")

    listed = keel_cli("list")
    assert listed.exit_code == 0, listed.output
    ((name, latest, count, _when, message),) = table_rows(listed.stdout)
    assert (name, latest, count, message) == ("golden", "v2", "2", "fix w1")

    versions = keel_cli("versions", "golden")
    rows = table_rows(versions.stdout)
    assert [(r[0], r[1], r[3], r[4], r[5]) for r in rows] == [
        ("v2", "2", "dana", "fix w1", "golden.yaml"),
        ("v1", "2", "dana", "first cut", "golden.jsonl"),
    ]

    shown = keel_cli("show", "golden", "--version", "1")
    assert shown.exit_code == 0, shown.output
    assert "golden v1 (newest v2)" in shown.stdout and "first cut" in shown.stdout
    assert ["w1", '{"question":"How long is the warranty?"}', "Two years.", "1"] in table_rows(
        shown.stdout
    )

    pulled = keel_cli("pull", "golden", "--version", "1", "-o", "v1.jsonl")
    assert lines(pulled.stdout) == ["v1.jsonl  golden v1: 2 items written."]
    items = [orjson.loads(line) for line in (workdir / "v1.jsonl").read_text().splitlines()]
    assert items == [
        {"id": "w1", "input": {"question": "How long is the warranty?"}, "expected": "Two years.",
         "context": [{"id": "1", "text": "The warranty lasts two years."}]},
        {"id": derived_item_id("Hello"), "input": "Hello", "metadata": {"topic": "greeting"}},
    ]  # fmt: skip
    # Pulled and pushed back: the same content, so nothing new.
    back = keel_cli("push", "v1.jsonl", "--name", "copy")
    assert lines(back.stdout)[0] == "copy created v1 (new): 2 items; 2 added"
    copy = httpx.get(keel.url + "/api/datasets/copy").json()
    original = httpx.get(keel.url + "/api/datasets/golden", params={"version": 1}).json()
    assert copy["content_hash"] == original["content_hash"]

    stdout = keel_cli("pull", "golden", "-o", "-")
    assert [orjson.loads(line)["input"] for line in stdout.stdout.splitlines()] == [
        {"question": "How long is the warranty?"},
        "Bye",
    ]
    default = keel_cli("pull", "golden")
    assert (workdir / "golden.jsonl").read_text().count("\n") == 2, default.output


def test_csv_files_push_with_variables(keel_cli: Keel, workdir: Path) -> None:
    (workdir / "qa.csv").write_text(
        "id,question,context_text,expected,metadata.source\n"
        "a,How long?,The warranty lasts two years.,Two years.,faq\n"
        "b,Returns?,Returns within 30 days.,30 days,\n"
    )
    pushed = keel_cli("push", "qa.csv", "--name", "qa")
    assert lines(pushed.stdout) == ["qa created v1 (new): 2 items; 2 added"]
    pulled = keel_cli("pull", "qa", "-o", "-")
    first = orjson.loads(pulled.stdout.splitlines()[0])
    assert first == {
        "id": "a",
        "input": {"question": "How long?", "context_text": "The warranty lasts two years."},
        "expected": "Two years.",
        "metadata": {"source": "faq"},
    }


def test_mistakes_in_a_file_are_listed_and_nothing_is_sent(
    keel: RunningKeel, keel_cli: Keel, workdir: Path
) -> None:
    (workdir / "bad.jsonl").write_text('{"input": "ok"}\n{"question": "x"}\n{oops\n')
    result = keel_cli("push", "bad.jsonl", "--name", "bad")
    assert result.exit_code == 2
    first, second, third, last = result.stderr.splitlines()
    assert first == "bad.jsonl:2: input: required: a text, or an object of prompt variables"
    assert second == (
        "bad.jsonl:2: question: unknown field (an item has id, input, expected, context, metadata)"
    )
    assert third.startswith("bad.jsonl:3: not valid JSON: ")
    assert last == "error: 3 problems in bad.jsonl; nothing was pushed"
    assert httpx.get(keel.url + "/api/datasets").json()["data"] == []
    unknown = keel_cli("push", "data.txt", "--name", "x")
    assert unknown.exit_code == 2
    assert "data.txt: unknown file type" in unknown.stderr


def test_server_refusals_and_an_unreachable_server(keel_cli: Keel, workdir: Path) -> None:
    missing = keel_cli("show", "nope")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: no dataset named 'nope'")
    bad_name = keel_cli("push", "golden.jsonl", "--name", "no spaces")
    assert bad_name.exit_code == 1 and "is not a dataset name" in bad_name.stderr
    down = runner_for(f"http://127.0.0.1:{free_port()}")("list")
    assert down.exit_code == 1
    assert down.stderr.startswith("error: cannot reach Keel at http://127.0.0.1:")
    score = keel_cli("from-traces", "x", "--score", "thumbs")
    assert score.exit_code == 2 and "is not NAME=VALUE" in score.stderr


def test_from_traces_with_prompt_and_score_filters(keel: RunningKeel, keel_cli: Keel) -> None:
    client = keel.client()
    traces = {}
    for text in ("Where is my order?", "Cancel it", "Thanks"):
        answer = client.chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": text}]
        )
        traces[text] = answer.headers["x-keel-trace-id"]
    for text, value in (("Where is my order?", False), ("Cancel it", False), ("Thanks", True)):
        score = {"name": "thumbs", "value": value, "trace_id": traces[text]}
        assert httpx.post(keel.url + "/api/scores", json=score).status_code == 201
    keel.spans(3)

    made = keel_cli(
        "from-traces", "complaints", "--score", "thumbs=false", "--since", "1h",
        "--expected-from-output", "-m", "thumbs down",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert lines(made.stdout) == [
        "2 traces matched.",
        "complaints created v1 (new): 2 items; 2 added",
    ]
    pulled = keel_cli("pull", "complaints", "-o", "-")
    items = [orjson.loads(line) for line in pulled.stdout.splitlines()]
    assert [item["input"] for item in items] == ["Cancel it", "Where is my order?"]
    assert all(item["expected"].startswith("Echo:") for item in items)
    assert items[0]["metadata"]["trace_id"] == traces["Cancel it"]

    again = keel_cli("from-traces", "complaints", "--score", "thumbs=false", "--append")
    assert lines(again.stdout) == [
        "2 traces matched, 2 kept (2 repeating an input left out).",
        "complaints unchanged (v1): 2 items. Nothing new.",
    ]
    nothing = keel_cli("from-traces", "prompted", "--prompt", "rag_qa@2")
    assert nothing.exit_code == 1
    assert nothing.stderr.startswith("error: no trace made an item: 0 matched the filter")
