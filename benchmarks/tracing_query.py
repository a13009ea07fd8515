"""Query side of benchmarks/tracing.py: 1,000,000 spans in SQLite, the API against bare SQL.

The dataset: application traces over the last 7 days (a root chain with embedding,
retrieval, rerank, two generations, a tool call and post-processing under it; users,
sessions, tags, input and output text, a few errors and scores), plus one agent trace of
10,000 spans (a root, 100 steps, 99 sub-steps each). Built once per run with bare
multi-row INSERTs into a fresh database migrated to the current schema.

Measured against a running `keel serve` (one worker) on that database, each request
repeated and reported as median and p95 of the client-side time on 127.0.0.1 (which
includes HTTP; server time is lower): the first page of the trace list (last 24 h and last
7 days, unfiltered and filtered), and the detail of the 10,000-span trace. The baseline, in
the same run: the bare SQL a hand-written tool would send for the same page (the newest
50 root spans in the window) and for the trace (every span of it), on one sqlite3
connection.
"""

from __future__ import annotations

import http.client
import random
import sqlite3
import statistics
import time
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import gateway as bench

from keel.core.ids import new_span_id, new_trace_id
from keel.core.spans import Span
from keel.core.usage import Usage
from keel.store.migrate import upgrade
from keel.store.spans import ROW_COLUMNS, insert_statement, span_to_row

TARGET_P95_MS = 300.0
# The figures; the filtered lists are measured against the same bar as context.
TARGETS = frozenset(
    (
        "traces, first page, last 24 h",
        "traces, first page, last 7 days",
        "10,000-span trace, detail",
    )
)
DAY = 86_400.0
_WORDS = (
    "warranty", "refund", "invoice", "shipping", "battery", "screen", "password", "account",
    "delivery", "order", "return", "exchange", "charger", "firmware", "subscription",
    "discount", "coupon", "receipt", "address",
)  # fmt: skip
RARE = "ticket #8812"  # in the output of one trace, five days ago
_STEPS = (
    ("embed", "embedding"), ("search", "retrieval"), ("rerank", "rerank"),
    ("chat", "generation"), ("lookup", "tool"), ("chat", "generation"), ("post", "span"),
)  # fmt: skip


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def app_trace(rng: random.Random, start: float) -> list[Span]:
    """One RAG request: a root chain and seven steps, priced generations."""
    trace_id, root_id = new_trace_id(), new_span_id()
    user = f"user-{rng.randrange(5000)}"
    session = f"session-{rng.randrange(20000)}"
    question = f"Question about {_sentence(rng, 6)}?"
    failed = rng.random() < 0.02
    spans = []
    clock = start
    for name, kind in _STEPS:
        latency = rng.uniform(0.005, 0.6 if kind == "generation" else 0.05)
        generation = kind == "generation"
        spans.append(
            Span(
                trace_id=trace_id, span_id=new_span_id(), parent_span_id=root_id, name=name,
                kind=kind, start_time=clock, end_time=clock + latency,
                status="error" if failed and name == "lookup" else "ok",
                model="gpt-4o-mini" if generation else None,
                provider="openai" if generation else None,
                usage=Usage(rng.randrange(200, 2000), rng.randrange(20, 400))
                if generation else None,
                cost_usd=rng.uniform(0.0001, 0.002) if generation else None,
                input=[{"role": "user", "content": question}] if generation else None,
                output=_sentence(rng, 25) if generation else None,
            )
        )  # fmt: skip
        clock += latency
    root = Span(
        trace_id=trace_id, span_id=root_id, name="answer", kind="chain", start_time=start,
        end_time=clock, status="error" if failed else "ok", user_id=user, session_id=session,
        tags=[rng.choice(("beta", "prod", "mobile", "web"))], input=question,
        output=spans[-2].output,
    )  # fmt: skip
    return [root, *spans]


def agent_trace(start: float, steps: int = 100, sub_steps: int = 99) -> list[Span]:
    """One long agent run: 1 + steps * (1 + sub_steps) spans (10,000 by default)."""
    trace_id, root_id = new_trace_id(), new_span_id()
    spans = []
    clock = start
    for step in range(steps):
        step_id, step_start = new_span_id(), clock
        for sub in range(sub_steps):
            spans.append(
                Span(
                    trace_id=trace_id, span_id=new_span_id(), parent_span_id=step_id,
                    name=f"tool {sub}", kind="tool", start_time=clock, end_time=clock + 0.001,
                    input={"step": step, "sub": sub}, output="done",
                )
            )  # fmt: skip
            clock += 0.001
        spans.append(
            Span(
                trace_id=trace_id, span_id=step_id, parent_span_id=root_id, name=f"step {step}",
                kind="agent", start_time=step_start, end_time=clock,
            )
        )  # fmt: skip
    spans.append(
        Span(
            trace_id=trace_id, span_id=root_id, name="agent run", kind="agent",
            start_time=start, end_time=clock, input="long task", output="finished",
        )
    )  # fmt: skip
    return spans


def insert_rows(cursor: Any, paramstyle: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """`rows` by multi-row INSERTs of 64 rows (the rest in one shorter statement)."""
    full = insert_statement(paramstyle, 64)
    for start in range(0, len(rows), 64):
        chunk = rows[start : start + 64]
        statement = full if len(chunk) == 64 else insert_statement(paramstyle, len(chunk))
        cursor.execute(statement, tuple(chain.from_iterable(chunk)))


def build(path: Path, total_spans: int, now: float) -> str:
    """A fresh SQLite database at `path` with `total_spans` spans; the long trace's id."""
    for stale in path.parent.glob(path.name + "*"):
        stale.unlink()
    url = f"sqlite:///{path}"
    upgrade(url)
    rng = random.Random(7)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("PRAGMA cache_size=-262144")
    long_trace = agent_trace(now - 3 * 3600)
    written = 0
    started = time.perf_counter()

    def insert(spans: list[Span]) -> None:
        insert_rows(connection, "qmark", [span_to_row(span) for span in spans])

    insert(long_trace)
    written += len(long_trace)
    pending: list[Span] = []
    traces = (total_spans - written) // (len(_STEPS) + 1)
    # start times spread over 7 days, then sorted: spans arrive roughly in time order
    starts = sorted(now - rng.uniform(0, 7 * DAY) for _ in range(traces))
    rare_at = starts[len(starts) * 2 // 7]
    for start in starts:
        pending.extend(app_trace(rng, start))
        if start == rare_at:
            pending[0].output = f"{pending[0].output} ({RARE})"
        if len(pending) >= 8192:
            insert(pending)
            written += len(pending)
            pending = []
            connection.commit()
    insert(pending)
    written += len(pending)
    connection.commit()
    scores = [
        (new_trace_id(), "thumbs", "BOOLEAN", float(rng.random() < 0.8), trace_id, now)
        for (trace_id,) in connection.execute(
            "SELECT trace_id FROM spans WHERE parent_span_id IS NULL AND start_time > ? "
            "ORDER BY span_id LIMIT 5000",
            (now - DAY,),
        )
    ]
    connection.executemany(
        "INSERT INTO scores (score_id, name, data_type, value, trace_id, source, created_at) "
        "VALUES (?, ?, ?, ?, ?, 'human', ?)",
        scores,
    )
    connection.commit()
    connection.execute("ANALYZE")
    connection.close()
    print(f"  built {written:,} spans in {time.perf_counter() - started:.1f} s")
    return long_trace[-1].trace_id


def _timed(call: Any, repeats: int) -> list[float]:
    call()  # warm the caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000.0)
    return times


def _figure(times: list[float]) -> dict[str, float]:
    p95 = statistics.quantiles(times, n=20, method="inclusive")[-1]
    return {"median_ms": statistics.median(times), "p95_ms": p95}


def run(procs: bench.Processes, total_spans: int, repeats: int) -> dict[str, Any]:
    """Build the dataset, serve it, time the API and the bare SQL; the figures by name."""
    now = time.time()
    path = bench.WORK / "tracing_query.db"
    long_trace_id = build(path, total_spans, now)
    config = bench.WORK / "tracing-query.yaml"
    config.write_text(
        "models:\n  unused:\n    deployments:\n      - provider: openai\n        model: m\n"
        "        api_base: http://127.0.0.1:9/v1\n"
    )
    port = bench.free_port()
    env = {"KEEL_DATABASE_URL": f"sqlite:///{path}", "KEEL_LOG_LEVEL": "warning"}
    argv = [str(bench.VENV_BIN / "keel"), "serve", "--config", str(config), "--port", str(port)]
    pid = procs.start("keel-query", argv, env)
    bench.wait_ready(procs, pid, f"http://127.0.0.1:{port}/health", "keel-query")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def api(path_and_query: str) -> Any:
        def call() -> None:
            connection.request("GET", path_and_query)
            answer = connection.getresponse()
            body = answer.read()
            if answer.status != 200:
                raise RuntimeError(f"{path_and_query}: HTTP {answer.status}: {body[:300]!r}")

        return call

    day = f"from={now - DAY:.0f}&to={now:.0f}"
    week = f"from={now - 7 * DAY:.0f}&to={now:.0f}"
    common, rare = "q=battery%20screen", "q=%238812"
    cases = {
        "traces, first page, last 24 h": f"/api/traces?{day}",
        "traces, first page, last 7 days": f"/api/traces?{week}",
        "traces, first page, 7 days, user": f"/api/traces?{week}&user=user-42",
        "traces, first page, 7 days, session": f"/api/traces?{week}&session=session-42",
        "traces, first page, 7 days, tag + model": f"/api/traces?{week}&tag=beta&model=gpt-4o-mini",
        "traces, first page, 7 days, errors": f"/api/traces?{week}&status=error",
        "traces, first page, 24 h, thumbs down": f"/api/traces?{day}&score=thumbs:eq:false",
        "traces, first page, 7 days, text search (common)": f"/api/traces?{week}&{common}",
        "traces, 7 days, text search (one match)": f"/api/traces?{week}&{rare}",
        "10,000-span trace, detail": f"/api/traces/{long_trace_id}",
    }
    results: dict[str, Any] = {}
    for name, target in cases.items():
        times = _timed(api(target), repeats)
        results[name] = _figure(times)
    connection.close()
    procs.stop(pid)

    raw = sqlite3.connect(path)
    raw.row_factory = sqlite3.Row
    columns = ", ".join(f'"{c}"' for c in ROW_COLUMNS)

    def bare_page() -> None:
        raw.execute(
            f"SELECT {columns} FROM spans WHERE start_time >= ? AND start_time < ? "
            "AND parent_span_id IS NULL ORDER BY start_time DESC LIMIT 50",
            (now - DAY, now),
        ).fetchall()

    def bare_trace() -> None:
        raw.execute(f"SELECT {columns} FROM spans WHERE trace_id = ?", (long_trace_id,)).fetchall()

    for name, call in (("bare SQL: newest 50 roots, 24 h", bare_page),
                       ("bare SQL: every span of the trace", bare_trace)):  # fmt: skip
        times = _timed(call, repeats)
        results[name] = _figure(times)
    raw.close()
    for stale in path.parent.glob(path.name + "*"):
        stale.unlink()
    return results
