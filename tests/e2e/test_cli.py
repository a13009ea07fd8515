"""The `keel` command: traces list/show and db current on what the gateway recorded; serve's
start-up refusals; and SIGTERM draining every queued span before `keel serve` exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from click.testing import Result
from sqlalchemy import Engine

from keel.core.spans import Span
from keel.store.engine import create_engine_for
from keel.store.migrate import head
from keel.store.spans import SpanRepository
from keel.store.writer import SpanWriter
from keel.testing import Behavior, FakeUpstream, Fault
from tests.e2e.conftest import KeelFactory, RunningKeel, fake_config, free_port

KEEL = [sys.executable, "-m", "keel.cli.main"]
USER: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
def recorded(keel: RunningKeel, fake: FakeUpstream, engine: Engine, make_span: Any) -> list[Span]:
    """Four calls through the gateway (one failing) plus one generation from two hours ago."""
    client = keel.client()
    client.chat.completions.create(
        model="fast",
        messages=USER,
        extra_headers={"x-keel-user": "ann", "x-keel-session": "s-1", "x-keel-tags": "a,b"},
    )
    client.chat.completions.create(
        model="claude", messages=USER, extra_headers={"x-keel-user": "bob"}
    )
    client.embeddings.create(model="embed", input="x", extra_headers={"x-keel-user": "ann"})
    fake.enqueue(Fault.status(400, message="bad temperature"))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="fast", messages=USER, extra_headers={"x-keel-user": "carl"}
        )
    spans = keel.spans(expected=4)
    assert len(spans) == 4
    with SpanWriter(engine, flush_interval_s=0.02) as writer:
        writer.emit(
            make_span(start_time=time.time() - 7200, alias="fast", user_id="old", model="m")
        )
    return spans


def lines_of(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def test_traces_list_json_has_every_promised_field_equal_to_the_record(
    recorded: list[Span], run_cli: Any
) -> None:
    rows = lines_of(run_cli("traces", "list", "--json"))
    assert [row["id"] for row in rows] == [span.trace_id for span in recorded]  # newest first
    for row, span in zip(rows, recorded, strict=True):
        usage = span.usage.as_dict() if span.usage else None
        expected = {
            "id": span.trace_id,
            "span_id": span.span_id,
            "alias": span.alias,
            "provider": span.provider,
            "upstream_model": span.model,
            "status": span.status,
            "status_code": span.status_code,
            "cost_usd": span.cost_usd,
            "unpriced": span.unpriced,
            "latency_ms": round(span.latency_ms, 3),
            "ttft_ms": span.ttft_ms,
            "user": span.user_id,
            "session": span.session_id,
            "tags": span.tags,
            "error": span.error,
        }
        assert {key: row[key] for key in expected} == expected
        if usage is not None:
            assert row["usage"] == usage
        else:
            assert set(row["usage"]) >= {"input_tokens", "output_tokens", "estimated"}
    failed, embedding, claude, fast = rows
    assert (fast["alias"], fast["provider"], fast["upstream_model"]) == (
        "fast",
        "openai",
        "gpt-4o-mini",
    )
    assert fast["usage"]["input_tokens"] > 0 and fast["cost_usd"] > 0 and not fast["unpriced"]
    assert (fast["user"], fast["session"], fast["tags"]) == ("ann", "s-1", ["a", "b"])
    assert claude["provider"] == "anthropic" and claude["user"] == "bob"
    assert embedding["upstream_model"] == "text-embedding-3-small"
    assert failed["status"] == "error" and failed["status_code"] == 400
    assert "bad temperature" in failed["error"] and failed["user"] == "carl"


def test_traces_list_filters_and_rejects_a_bad_since(recorded: list[Span], run_cli: Any) -> None:
    def users(*args: str) -> list[str | None]:
        return [row["user"] for row in lines_of(run_cli("traces", "list", "--json", *args))]

    assert users("--model", "fast") == ["carl", "ann"]
    assert users("--model", "claude") == ["bob"]
    assert users("--user", "ann") == ["ann", "ann"]
    assert users("--model", "fast", "--user", "ann") == ["ann"]
    assert users("--model", "nope") == []
    assert users("--since", "3h", "--model", "fast") == ["carl", "ann", "old"]
    assert users("--since", "90m", "--user", "old") == []
    assert users("--since", "1d", "--limit", "2") == ["carl", "ann"]

    result = run_cli("traces", "list", "--since", "yesterday")
    assert result.exit_code != 0
    problem = [line for line in result.output.splitlines() if "yesterday" in line]
    assert len(problem) == 1 and "not a duration" in problem[0] and "1h" in problem[0]
    assert "Traceback" not in result.output


def test_bad_since_names_the_option(run_cli: Any) -> None:
    result = run_cli("traces", "list", "--since", "yesterday")
    assert result.exit_code == 2
    assert "Invalid value for '--since': 'yesterday' is not a duration" in result.output


def test_traces_list_table_show_and_db_current(recorded: list[Span], run_cli: Any) -> None:
    table = run_cli("traces", "list")
    assert table.exit_code == 0, table.output
    assert "4 call(s) in the last 1h" in table.output
    for words in ("fast", "claude", "embed", "ann", "bob", "carl", "openai/gpt-4o-mini"):
        assert words in table.output, words
    assert "old" not in table.output

    fast = recorded[-1]
    assert fast.usage is not None
    for wanted in (fast.trace_id, fast.span_id):  # by trace id or by span id
        shown = run_cli("traces", "show", wanted)
        assert shown.exit_code == 0, shown.output
        out = shown.output
        assert "fast -> openai/gpt-4o-mini (fast[0])" in out
        assert f"in {fast.usage.input_tokens}, out {fast.usage.output_tokens}" in out
        assert "attempts" in out and "ok" in out and "ann / s-1" in out
        assert "Echo: hi" in out  # the captured answer

    failed = recorded[0]
    out = run_cli("traces", "show", failed.trace_id).output
    assert "error 400" in out and "bad temperature" in out and "HTTP 400" in out

    detail = json.loads(run_cli("traces", "show", fast.trace_id, "--json").output)
    assert detail[0]["attempts"][0]["outcome"] == "ok" and detail[0]["input"] == USER

    missing = run_cli("traces", "show", "0123456789abcdef")
    assert missing.exit_code != 0
    assert "no trace or span with id '0123456789abcdef'" in missing.output

    current = run_cli("db", "current")
    assert current.exit_code == 0 and current.output.strip() == head()


# --- `keel serve` as a real process ------------------------------------------------------------


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    return {**env, "KEEL_DATABASE_URL": f"sqlite:///{tmp_path / 'keel.db'}", **extra}


def test_serve_refuses_to_start_on_a_bad_config_or_an_open_host(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "models:\n"
        "  fast:\n"
        "    deployments:\n"
        "      - provider: openai\n"
        "        model: gpt-4o-mini\n"
        "        weigth: 2\n"
    )
    runs = {
        "typo": [*KEEL, "serve", "--config", str(bad)],
        "open": [*KEEL, "serve", "--host", "0.0.0.0"],
    }
    procs = {
        name: subprocess.Popen(
            argv,
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, argv in runs.items()
    }
    results = {name: (p.communicate(timeout=60), p.returncode) for name, p in procs.items()}

    (_, err), code = results["typo"]
    assert code == 2, err
    assert err.startswith("keel: configuration error:")
    assert "models.fast.deployments[0].weigth (line 6)" in err
    assert "did you mean 'weight'?" in err and "Traceback" not in err

    (_, err), code = results["open"]
    assert code == 2, err
    assert "0.0.0.0" in err and "auth.master_key" in err and "--host 127.0.0.1" in err
    assert "Traceback" not in err
    assert not (tmp_path / "keel.db").exists()  # refused before touching the database


def _start_serve(
    config: str, tmp_path: Path, db_url: str, **env: str
) -> tuple[subprocess.Popen[str], str]:
    path = tmp_path / "keel.yaml"
    path.write_text(config)
    port = free_port()
    proc = subprocess.Popen(
        [*KEEL, "serve", "--config", str(path), "--port", str(port)],
        cwd=tmp_path,
        env=_env(tmp_path, KEEL_DATABASE_URL=db_url, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "keel serve did not start"
        try:
            if httpx2.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx2.TransportError:
            time.sleep(0.05)


def test_sigterm_drains_every_queued_span_before_exit(
    fake: FakeUpstream, db_url: str, tmp_path: Path
) -> None:
    # The writer holds spans for up to 5 s before a batch, so at SIGTERM none is stored yet.
    config = fake_config(fake, recording="{flush_interval_s: 5, batch_size: 100000}")
    proc, url = _start_serve(config, tmp_path, db_url, FAKE_KEY="sk-fake")
    fake.default = Behavior(latency_s=0.2)
    client = httpx2.Client(limits=httpx2.Limits(max_connections=100), timeout=30)
    total = 200

    def call(index: int) -> str | None:
        try:
            response = client.post(
                url + "/v1/chat/completions",
                json={"model": "fast", "messages": [{"role": "user", "content": f"m{index}"}]},
            )
        except httpx2.TransportError:
            return None  # refused once shutdown began: fine, it was never accepted
        return response.headers["x-keel-trace-id"] if response.status_code == 200 else None

    try:
        with ThreadPoolExecutor(100) as pool:
            futures = [pool.submit(call, i) for i in range(total)]
            deadline = time.monotonic() + 10
            while sum(f.done() for f in futures) < total // 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            answered_before_signal = sum(f.done() for f in futures)
            health = httpx2.get(url + "/health", timeout=5).json()["recording"]
            in_flight = fake.in_flight
            proc.send_signal(signal.SIGTERM)
            answered = [trace for trace in (f.result() for f in futures) if trace]
        _, err = proc.communicate(timeout=40)
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
    assert answered_before_signal > 0 and health["written"] == 0, health  # all still pending
    assert in_flight > 0  # the signal arrived with requests still upstream
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Traceback" not in err
    assert len(answered) >= total // 4
    stored = SpanRepository(create_engine_for(db_url)).list_calls(0, limit=10_000)
    stored_ids = {span.trace_id for span in stored}
    assert set(answered) <= stored_ids  # every answered call was recorded
    assert {span.status for span in stored} == {"ok"}  # in-flight calls finished, not cut off
    assert "'dropped': 0" in err and "'rejected': 0" in err


def test_sigterm_exit_code_is_zero(tmp_path: Path) -> None:
    proc, _ = _start_serve("", tmp_path, f"sqlite:///{tmp_path / 'keel.db'}")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=40)
    assert proc.returncode == 0, err


def test_health_counts_a_span_waiting_for_its_batch(
    keel_factory: KeelFactory, fake: FakeUpstream
) -> None:
    running = keel_factory(fake_config(fake, recording="{flush_interval_s: 5}"))
    running.client().chat.completions.create(model="fast", messages=USER)
    stats = httpx2.get(running.url + "/health", timeout=5).json()["recording"]
    assert stats["queued"] + stats["written"] == 1, stats


def test_traces_on_a_database_without_keel_tables_says_what_to_do(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "keel.cli.main", "traces", "list"],
        env={**os.environ, "KEEL_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no Keel tables yet" in result.stderr and "keel db upgrade" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
