"""`keel prompts`: the registry driven from the CLI over HTTP against a running Keel.

Each test writes prompt YAML files into a scratch folder, runs `keel prompts ...`
there with KEEL_URL pointing at the server, and checks what the user sees: the
lines printed, the exit code, the history, and which version the gateway serves.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest
from click.testing import CliRunner, Result

from keel.cli.main import cli
from keel.testing import FakeUpstream
from tests.e2e.conftest import KeelFactory, RunningKeel, fake_config, free_port

EXAMPLES = Path(__file__).parents[2] / "examples" / "prompts"
VARIABLES = {"context": "The warranty lasts two years.", "query": "How long is the warranty?"}
RAG_QA_SYSTEM = "You are a helpful assistant that answers questions based on provided context."
UTC_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

Keel = Callable[..., Result]


def runner_for(url: str, workdir: Path, **env: str | None) -> Keel:
    """`keel prompts ...` in-process, from `workdir`, against the Keel at `url`."""
    runner = CliRunner()
    base: dict[str, str | None] = {
        "KEEL_URL": url,
        "KEEL_API_KEY": None,
        "KEEL_MASTER_KEY": None,
        "COLUMNS": "240",
        "USER": "dana",
        # No global or system git config: the default author is $USER, whoever runs the tests.
        "GIT_CONFIG_GLOBAL": str(workdir / ".no-gitconfig"),
        "GIT_CONFIG_NOSYSTEM": "1",
        **env,
    }

    def run(*args: str, **more: str | None) -> Result:
        return runner.invoke(cli, ["prompts", *args], env={**base, **more})

    return run


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder holding prompts/ with the two example prompts; the current directory."""
    work = tmp_path / "project"
    shutil.copytree(EXAMPLES, work / "prompts")
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def keel_cli(keel: RunningKeel, workdir: Path) -> Keel:
    return runner_for(keel.url, workdir)


def edit_system(path: Path, system: str) -> None:
    """Replace the first system message of the rag_qa example with one line of text."""
    text = path.read_text()
    start = text.index("    content: |")
    end = text.index("  - role: user")
    path.write_text(text[:start] + f"    content: {system}\n" + text[end:])


def served(keel: RunningKeel, user: str, label: str = "production") -> int:
    """The rag_qa version the gateway renders for `user` under `label`."""
    answer = httpx.post(
        keel.url + "/v1/chat/completions",
        json={"prompt": {"name": "rag_qa", "label": label, "variables": VARIABLES}},
        headers={"x-keel-user": user},
    )
    assert answer.status_code == 200, answer.text
    span = keel.span(answer.headers["x-keel-trace-id"])
    assert span.attributes["keel.prompt.label"] == label
    return int(span.attributes["keel.prompt.version"])


def table_rows(output: str) -> list[list[str]]:
    """The body rows of a rich table as lists of cell texts."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


def history(run: Keel, name: str = "rag_qa") -> list[tuple[str, str]]:
    """(who, what) of every row `keel prompts history` prints, checking each time is UTC."""
    result = run("history", name)
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert all(UTC_TIME.match(when) for when, _, _ in rows), rows
    return [(who, what) for _, who, what in rows]


def lines(output: str) -> list[str]:
    return [re.sub(r"\s{2,}", "  ", line.strip()) for line in output.splitlines()]


def test_release_flow_push_label_rollout_promote_rollback(
    keel: RunningKeel, keel_cli: Keel, workdir: Path
) -> None:
    first = keel_cli("push", "-m", "first cut")  # no PATH: the prompts/ folder
    assert first.exit_code == 0, first.output
    assert lines(first.stdout) == [
        "house_style  created v1 (new)  prompts/house_style.yaml",
        "rag_qa  created v1 (new)  prompts/rag_qa.yaml",
        "Pushed 2 new versions.",
    ]
    assert history(keel_cli) == [("dana", 'push v1 "first cut"')]

    labelled = keel_cli("label", "rag_qa", "1", "production", "--actor", "ci")
    assert labelled.stdout == "rag_qa: production → v1 (was none)\n"
    assert served(keel, "u-0") == 1

    edit_system(workdir / "prompts" / "rag_qa.yaml", "Answer from the context only.")
    second = keel_cli("push", "prompts", "-m", "tighten the system prompt", "--author", "sam")
    assert second.exit_code == 0, second.output
    assert lines(second.stdout) == [
        "house_style  unchanged (v1)  prompts/house_style.yaml",
        "rag_qa  created v2 (was v1)  prompts/rag_qa.yaml",
        "Pushed 1 new version (1 prompt unchanged).",
    ]

    staged = keel_cli("label", "rag_qa", "2", "staging")
    assert staged.stdout == "rag_qa: staging → v2 (was none)\n"
    assert (served(keel, "u-0", "staging"), served(keel, "u-0")) == (2, 1)
    assert history(keel_cli)[1:] == [
        ("ci", "label production: none → v1"),
        ("sam", 'push v2 "tighten the system prompt"'),
        ("dana", "label staging: none → v2"),
    ]

    started = keel_cli("rollout", "rag_qa", "production", "2=10%", "--actor", "ops")
    assert started.exit_code == 0, started.output
    assert started.stdout == "rag_qa: production rolling out → v2 10%, v1 90% (was v1)\n"
    assert history(keel_cli)[-1] == ("ops", "rollout production: v1 → v2 10%, v1 90%")
    split = {f"user-{i}": served(keel, f"user-{i}") for i in range(30)}
    counts = Counter(split.values())
    assert set(counts) == {1, 2} and counts[1] > counts[2], counts  # a few users get v2
    canary = next(user for user, version in split.items() if version == 2)
    stayer = next(user for user, version in split.items() if version == 1)

    promoted = keel_cli("rollout", "rag_qa", "production", "--promote", "--actor", "ops")
    assert promoted.stdout == "rag_qa: production promoted → v2 (was v2 10%, v1 90%)\n"
    assert history(keel_cli)[-1] == ("ops", "promote production: v2 10%, v1 90% → v2")
    assert (served(keel, canary), served(keel, stayer)) == (2, 2)

    # A rollback undoes the last move: the promote, so the 10% rollout is back ...
    back = keel_cli("rollback", "rag_qa", "production", "--actor", "oncall")
    assert back.stdout == "rag_qa: production rolled back → v2 10%, v1 90% (was v2)\n"
    assert (served(keel, canary), served(keel, stayer)) == (2, 1)  # the same users as before
    # ... and one more goes back to before the rollout.
    again = keel_cli("rollback", "rag_qa", "production", "--actor", "oncall")
    assert again.stdout == "rag_qa: production rolled back → v1 (was v2 10%, v1 90%)\n"
    assert (served(keel, canary), served(keel, stayer)) == (1, 1)
    assert history(keel_cli)[-2:] == [
        ("oncall", "rollback production: v2 → v2 10%, v1 90%"),
        ("oncall", "rollback production: v2 10%, v1 90% → v1"),
    ]

    nothing_left = keel_cli("rollback", "rag_qa", "production")
    assert nothing_left.exit_code == 1
    assert nothing_left.stderr == (
        "error: label 'production' of 'rag_qa' has no earlier target to roll back to\n"
    )


def test_dry_run_shows_the_diff_and_writes_nothing(keel_cli: Keel, workdir: Path) -> None:
    keel_cli("push", "--author", "dana")
    edit_system(workdir / "prompts" / "rag_qa.yaml", "Be brief.")

    preview = keel_cli("push", "--dry-run")
    assert preview.exit_code == 0, preview.output
    out = preview.stdout
    assert "rag_qa  would create v2 (was v1)  prompts/rag_qa.yaml" in lines(out)
    assert "--- rag_qa@1\n+++ rag_qa@2\n" in out
    assert "+  content: Be brief.\n" in out
    assert f"-    {RAG_QA_SYSTEM}\n" in out
    assert out.endswith("Dry run: 1 prompt would get a new version; nothing was written.\n")

    assert table_row(keel_cli("list").stdout, "rag_qa")[:3] == ["rag_qa", "chat", "v1"]
    assert [what for _, what in history(keel_cli)] == ["push v1"]


def table_row(output: str, name: str) -> list[str]:
    """The cells of the table row of prompt `name`."""
    (row,) = [row for row in table_rows(output) if row[0] == name]
    return row


def test_pushing_unchanged_files_says_nothing_new(keel_cli: Keel) -> None:
    assert keel_cli("push").exit_code == 0
    again = keel_cli("push", "prompts/rag_qa.yaml", "prompts/house_style.yaml")
    assert again.exit_code == 0, again.output
    assert lines(again.stdout) == [
        "house_style  unchanged (v1)  prompts/house_style.yaml",
        "rag_qa  unchanged (v1)  prompts/rag_qa.yaml",
        "Nothing new: 2 prompts unchanged.",
    ]


def test_a_malformed_file_exits_2_at_its_line_and_pushes_nothing(
    keel_cli: Keel, workdir: Path
) -> None:
    path = workdir / "prompts" / "rag_qa.yaml"
    text = path.read_text()
    path.write_text(text.replace("  - role: system", "  - role: sistem"))
    line = text.splitlines().index("  - role: system") + 1

    result = keel_cli("push")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"prompts/rag_qa.yaml:{line}: messages[0].role: must be one of system, developer, "
        "user, assistant, tool",
        "error: 1 problem in prompt files; nothing was pushed",
    ]
    # The valid house_style.yaml beside it was not pushed either.
    assert keel_cli("list").stdout == (
        "No prompts registered yet; push some with `keel prompts push`.\n"
    )


def test_push_refuses_missing_paths_and_duplicate_names(keel_cli: Keel, workdir: Path) -> None:
    missing = keel_cli("push", "nowhere")
    assert missing.exit_code == 2
    assert missing.stderr.splitlines()[0] == "nowhere: no such file or folder"

    shutil.copy(workdir / "prompts" / "rag_qa.yaml", workdir / "prompts" / "rag_qa_copy.yaml")
    twice = keel_cli("push")
    assert twice.exit_code == 2
    assert (
        "prompts/rag_qa_copy.yaml: name: prompt 'rag_qa' is also in prompts/rag_qa.yaml"
        in twice.stderr
    )

    shutil.rmtree(workdir / "prompts")
    nothing = keel_cli("push")
    assert nothing.exit_code == 2
    assert "there is no prompts/ folder here" in nothing.stderr


def test_server_refusals_are_one_error_line_exit_1(keel_cli: Keel) -> None:
    alone = keel_cli("push", "prompts/rag_qa.yaml")
    assert alone.exit_code == 1
    assert alone.stderr == (
        "error: rag_qa includes 'house_style', which is not registered; "
        "push it first (or in the same push)\n"
    )
    keel_cli("push")

    unknown = keel_cli("show", "nope")
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("error: no prompt named 'nope'")

    cases = {
        ("label", "rag_qa", "9", "production"): "error: prompt 'rag_qa' has no version 9\n",
        ("label", "rag_qa", "1", "latest"): (
            "error: `latest` follows every push; it cannot be moved by hand\n"
        ),
        ("rollout", "rag_qa", "production", "1=10"): (
            "error: prompt 'rag_qa' has no label 'production' to roll out on\n"
        ),
        ("show", "rag_qa@7"): "error: prompt 'rag_qa' has no version 7\n",
    }
    for args, expected in cases.items():
        result = keel_cli(*args)
        assert (result.exit_code, result.stderr) == (1, expected), args

    invalid = keel_cli("label", "rag_qa", "1", "production", "--actor", "x" * 201)
    assert invalid.exit_code == 1
    assert invalid.stderr.splitlines() == [
        "error: The request was not carried out.",
        "  actor: String should have at most 200 characters",
    ]


def test_bad_arguments_are_usage_errors(keel_cli: Keel) -> None:
    for step in ("8=abc", "8", "=10%", "8=0%", "8=150%"):
        result = keel_cli("rollout", "rag_qa", "production", step)
        assert result.exit_code == 2, step
        assert "Invalid value for '[VERSION=PERCENT]'" in result.stderr, step
    neither = keel_cli("rollout", "rag_qa", "production")
    assert neither.exit_code == 2
    assert "give one of VERSION=PERCENT (e.g. 8=10%), --promote or --abort" in neither.stderr
    assert keel_cli("label", "rag_qa", "v1", "production").exit_code == 2


def test_list_and_show_name_versions_labels_and_rollouts(keel_cli: Keel, workdir: Path) -> None:
    keel_cli("push", "-m", "first cut", "--author", "dana")
    edit_system(workdir / "prompts" / "rag_qa.yaml", "Be brief.")
    keel_cli("push", "-m", "shorter", "--author", "sam")
    keel_cli("label", "rag_qa", "1", "production")
    keel_cli("label", "rag_qa", "2", "staging")
    keel_cli("rollout", "rag_qa", "production", "2=25%")

    listed = keel_cli("list")
    assert listed.exit_code == 0, listed.output
    assert table_rows(listed.stdout)[0][:3] == ["house_style", "text", "v1"]
    rag_qa = [row for row in table_rows(listed.stdout) if row[0] in ("rag_qa", "")]
    assert rag_qa[0][:5] == ["rag_qa", "chat", "v2", "production → v2 25%, v1 75%", "rag"]
    assert rag_qa[1][3] == "staging → v2"
    summary = {p["name"]: p for p in orjson.loads(keel_cli("list", "--json").stdout)}
    assert summary["rag_qa"]["labels"]["production"] == [
        {"version": 2, "weight": 25.0}, {"version": 1, "weight": 75.0}
    ]  # fmt: skip

    shown = keel_cli("show", "rag_qa")
    assert shown.exit_code == 0, shown.output
    header = dict(_grid(shown.stdout))
    assert header["prompt"] == "rag_qa v2 (chat)"
    assert header["labels"] == "latest, production (25%), staging"
    assert (header["author"], header["message"]) == ("sam", "shorter")
    assert header["source"] == "prompts/rag_qa.yaml"  # not in git: no commit
    assert header["includes"] == "-"  # "Be brief." dropped the include
    assert UTC_TIME.match(header["created"])
    assert "name: rag_qa\ntype: chat\nmessages:\n- role: system\n  content: Be brief.\n" in (
        shown.stdout
    )

    production = keel_cli("show", "rag_qa@1")
    first = dict(_grid(production.stdout))
    assert (first["prompt"], first["labels"]) == ("rag_qa v1 (chat)", "production (75%)")
    assert (first["message"], first["includes"]) == ("first cut", "house_style → v1")
    assert f"    {RAG_QA_SYSTEM}\n" in production.stdout
    assert keel_cli("show", "rag_qa@staging", "--json").stdout.startswith(
        '{\n  "name": "rag_qa",\n  "version": 2,'
    )

    diff = keel_cli("diff", "rag_qa", "1", "staging")
    assert diff.stdout.startswith("--- rag_qa@1\n+++ rag_qa@2\n")
    assert "+  content: Be brief.\n" in diff.stdout
    assert (
        keel_cli("diff", "rag_qa", "2", "staging").stdout
        == "rag_qa: 2 and staging read the same.\n"
    )


def _grid(output: str) -> list[tuple[str, str]]:
    rows = []
    for line in output.splitlines():
        if not line.strip():
            break  # the header grid ends at the blank line before the YAML
        key, _, value = line.partition("  ")
        rows.append((key, value.strip()))
    return rows


def test_pull_writes_files_that_push_back_unchanged(keel_cli: Keel, workdir: Path) -> None:
    keel_cli("push")
    keel_cli("label", "house_style", "1", "production")

    pulled = keel_cli("pull", "pulled")
    assert pulled.exit_code == 0, pulled.output
    assert lines(pulled.stdout) == [
        "pulled/house_style.yaml  house_style v1 (latest) written",
        "pulled/rag_qa.yaml  rag_qa v1 (latest) written",
        "Pulled latest into pulled/: 2 files written.",
    ]
    assert (workdir / "pulled" / "house_style.yaml").read_text() == (
        "name: house_style\ntype: text\n"
        "description: Tone rules shared by every customer-facing prompt.\n"
        "template: Answer in plain English, in at most three sentences.\ntags:\n- shared\n"
    )
    back = keel_cli("push", "pulled")
    assert back.stdout.endswith("Nothing new: 2 prompts unchanged.\n"), back.output

    production = keel_cli("pull", "pulled", "--label", "production")
    assert production.exit_code == 0, production.output
    assert "pulled/house_style.yaml  house_style v1 (production) up to date" in production.stdout
    assert production.stderr == "skipped rag_qa: it has no label 'production'\n"


def test_git_commit_and_author_come_from_the_repository(keel_cli: Keel, workdir: Path) -> None:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.name=Dana Git", "-c", "user.email=d@example.com", *args],
            cwd=workdir,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    git("init", "-q")
    git("add", "prompts")
    git("commit", "-q", "-m", "prompts")
    git("config", "user.name", "Dana Git")  # the repository's own config, read by the CLI
    head = git("rev-parse", "HEAD")

    assert keel_cli("push").exit_code == 0
    header = dict(_grid(keel_cli("show", "rag_qa").stdout))
    assert header["source"] == f"prompts/rag_qa.yaml @ {head[:12]}"
    assert header["author"] == "Dana Git"


def test_the_key_goes_as_a_bearer_token(
    keel_factory: KeelFactory, fake: FakeUpstream, workdir: Path
) -> None:
    guarded = keel_factory(
        fake_config(fake, auth="{master_key: env:KEEL_MASTER_KEY}"),
        env={"KEEL_MASTER_KEY": "sk-master"},
    )
    run = runner_for(guarded.url, workdir)
    refused = run("list")
    assert refused.exit_code == 1
    assert refused.stderr == (
        "error: Send 'Authorization: Bearer <master key>'. "
        "(set KEEL_API_KEY to a key of this Keel)\n"
    )
    assert run("push", KEEL_API_KEY="sk-master").exit_code == 0
    listed = run("list", KEEL_MASTER_KEY="sk-master")
    assert listed.exit_code == 0, listed.output
    assert "rag_qa" in listed.stdout


def test_an_unreachable_keel_is_named_with_the_reason(workdir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run = runner_for(url, workdir)
    result = run("push")
    assert result.exit_code == 1
    assert result.stderr == f"error: cannot reach Keel at {url}: Connection refused\n"
    flag = run("--url", "localhost:4000", "list")
    assert flag.exit_code == 2
    assert "'localhost:4000' is not an http(s) URL" in flag.stderr
