"""Tracing ingest: OTLP protobuf batches of 512 spans into a running Keel, vs a bare INSERT.

What it measures, side by side in one run, per database (SQLite, and PostgreSQL with
`--postgres`):

1. Keel: a fresh `keel serve` (one worker) receives `--batches` distinct OTLP/HTTP
   protobuf requests of 512 spans each (a mix of chains, retrievals and priced
   generations with GenAI attributes), sent by `--clients` keep-alive connections as fast
   as Keel answers (a 503 is retried after 50 ms, as OTLP exporters retry); the clock
   starts after one warm-up batch is stored and stops when `/health` says every span is
   stored. Figure: spans stored per second, sustained (target: >= 20,000).
2. The floor: the same spans, already converted to rows, inserted by one connection in
   multi-row INSERT statements of 64 rows, 512 rows per transaction, into a fresh database
   with the same schema. Figure: rows per second. On PostgreSQL also the same rows by
   COPY, which is what Keel's writer uses there.
3. The ratio Keel / bare INSERT (and Keel / bare COPY).

    python benchmarks/tracing.py                 # SQLite
    python benchmarks/tracing.py --postgres      # SQLite and PostgreSQL (127.0.0.1:5432)
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as bench
import tracing_query
from tracing_query import insert_rows

from keel.store.engine import create_engine_for
from keel.store.migrate import upgrade
from keel.store.spans import COPY_STATEMENT, span_to_row
from keel.tracing.otlp import decode_protobuf
from keel.tracing.semconv import to_span

BATCH = 512
_NAMES = ("answer", "embed", "search", "rerank", "chat", "tool", "chat", "post")
TARGET_SPANS_PER_S = 20_000
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS = bench.ROOT / "benchmarks" / "results" / "tracing.json"


def make_batches(count: int) -> list[bytes]:
    """`count` protobuf requests of BATCH spans: traces of 8 spans, 2 of them generations."""
    out = []
    serial = 0
    now_ns = time.time_ns()
    for _ in range(count):
        request = ExportTraceServiceRequest()
        resource = request.resource_spans.add()
        attr = resource.resource.attributes.add()
        attr.key, attr.value.string_value = "service.name", "bench-app"
        spans = resource.scope_spans.add().spans
        for _ in range(BATCH // 8):
            serial += 1
            trace_id = serial.to_bytes(16, "big")
            root = (serial << 8).to_bytes(8, "big")
            for i in range(8):
                span = spans.add()
                span.trace_id = trace_id
                span.span_id = root if i == 0 else ((serial << 8) + i).to_bytes(8, "big")
                if i:
                    span.parent_span_id = root
                span.name = _NAMES[i]
                span.kind = 1
                span.start_time_unix_nano = now_ns + i * 1_000_000
                span.end_time_unix_nano = now_ns + (i + 1) * 1_000_000
                _attributes(span, i)
        out.append(request.SerializeToString())
    return out


def _attributes(span: Any, index: int) -> None:
    def put(key: str, value: Any) -> None:
        attr = span.attributes.add()
        attr.key = key
        if isinstance(value, int):
            attr.value.int_value = value
        else:
            attr.value.string_value = value

    if index == 0:
        put("user.id", "user-7")
        put("session.id", "session-3")
        put("input.value", "What does the warranty cover?")
    elif index == 2:
        put("openinference.span.kind", "RETRIEVER")
        put("retrieval.documents.count", 5)
    elif index in (4, 6):
        put("gen_ai.operation.name", "chat")
        put("gen_ai.provider.name", "openai")
        put("gen_ai.request.model", "gpt-4o-mini")
        put("gen_ai.usage.input_tokens", 850)
        put("gen_ai.usage.output_tokens", 120)
        put("gen_ai.input.messages", json.dumps([{"role": "user", "content": "context..."}]))


# -- Keel ------------------------------------------------------------------------------------


def run_keel(procs: bench.Processes, db_url: str, batches: list[bytes], clients: int) -> float:
    config = bench.WORK / "tracing-keel.yaml"
    config.write_text(
        "models:\n  unused:\n    deployments:\n      - provider: openai\n        model: m\n"
        "        api_base: http://127.0.0.1:9/v1\n"
    )
    port = bench.free_port()
    env = {"KEEL_DATABASE_URL": db_url, "KEEL_LOG_LEVEL": "warning"}
    argv = [str(bench.VENV_BIN / "keel"), "serve", "--config", str(config), "--port", str(port)]
    pid = procs.start("keel-tracing", argv, env)
    base = f"http://127.0.0.1:{port}"
    bench.wait_ready(procs, pid, base + "/health", "keel-tracing")
    # Warm-up: the first batch (its spans are not counted) waits for the recording process
    # to start; the figure is the sustained rate after that.
    warmup, batches = batches[0], batches[1:]
    urllib.request.urlopen(
        urllib.request.Request(
            base + "/v1/traces", warmup, {"Content-Type": "application/x-protobuf"}
        ),
        timeout=10,
    ).read()
    while bench.keel_health(base)["written"] < BATCH:
        time.sleep(0.05)
    total = len(batches) * BATCH
    queue = list(range(len(batches)))
    lock = threading.Lock()
    errors: list[str] = []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if not queue:
                    break
                index = queue.pop()
            while True:  # as an OTLP exporter does: 503 + Retry-After means send it again
                connection.request(
                    "POST",
                    "/v1/traces",
                    body=batches[index],
                    headers={"Content-Type": "application/x-protobuf"},
                )
                answer = connection.getresponse()
                answer.read()
                if answer.status != 503:
                    break
                time.sleep(0.05)
            if answer.status != 200:
                errors.append(f"HTTP {answer.status}")
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent = time.perf_counter() - started
    while True:
        stats = bench.keel_health(base)
        if stats["written"] + stats["dropped"] + stats["rejected"] >= total + BATCH:
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    procs.stop(pid)
    if errors or stats["dropped"] or stats["rejected"]:
        raise RuntimeError(f"keel refused spans: {errors[:3]}, recording {stats}")
    print(f"  keel: {total:,} spans sent in {sent:.2f} s, all stored after {elapsed:.2f} s")
    return total / elapsed


# -- the bare INSERT -------------------------------------------------------------------------


def bare_rows(batches: list[bytes]) -> list[tuple[Any, ...]]:
    """The rows Keel stores for `batches` (its warm-up batch included), made up front."""
    return [span_to_row(to_span(s)) for b in batches for s in decode_protobuf(b).spans]


def run_bare(db_url: str, rows: list[tuple[Any, ...]]) -> float:
    """Multi-row INSERTs of 64 rows, BATCH rows per transaction, on one connection."""
    engine = create_engine_for(db_url)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        started = time.perf_counter()
        for start in range(0, len(rows), BATCH):
            insert_rows(cursor, engine.dialect.paramstyle, rows[start : start + BATCH])
            raw.commit()
        elapsed = time.perf_counter() - started
    finally:
        raw.close()
        engine.dispose()
    print(f"  bare INSERT: {len(rows):,} rows in {elapsed:.2f} s")
    return len(rows) / elapsed


def run_bare_copy(db_url: str, rows: list[tuple[Any, ...]]) -> float:
    """PostgreSQL only: COPY, BATCH rows per transaction, on one connection."""
    import psycopg

    with psycopg.connect(db_url) as connection:
        cursor = connection.cursor()
        started = time.perf_counter()
        for start in range(0, len(rows), BATCH):
            with cursor.copy(COPY_STATEMENT) as copy:
                for row in rows[start : start + BATCH]:
                    copy.write_row(row)
            connection.commit()
        elapsed = time.perf_counter() - started
    print(f"  bare COPY: {len(rows):,} rows in {elapsed:.2f} s")
    return len(rows) / elapsed


# -- databases -------------------------------------------------------------------------------


def fresh_database(kind: str, name: str) -> str:
    if kind == "sqlite":
        for stale in bench.WORK.glob(f"{name}.db*"):
            stale.unlink()
        url = f"sqlite:///{bench.WORK / (name + '.db')}"
    else:
        import psycopg

        database = f"keel_bench_{name}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        url = f"postgresql://postgres@127.0.0.1:5432/{database}"
    upgrade(url)
    return url


def drop_database(url: str) -> None:
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def report_queries(figures: dict[str, Any]) -> dict[str, Any]:
    """Print each query's median and p95, with a verdict for the target figures (the first
    page of the trace list, a 10,000-span trace) and the same bar as context for the
    filtered lists; the figures with verdicts."""
    bare_page = figures["bare SQL: newest 50 roots, 24 h"]["p95_ms"]
    bare_trace = figures["bare SQL: every span of the trace"]["p95_ms"]
    bar = tracing_query.TARGET_P95_MS
    for name, figure in figures.items():
        line = f"  {name}: median {figure['median_ms']:.1f} ms, p95 {figure['p95_ms']:.1f} ms"
        if not name.startswith("bare"):
            within = figure["p95_ms"] <= bar
            base = bare_trace if "trace, detail" in name else bare_page
            figure["ratio_to_bare_p95"] = figure["p95_ms"] / base
            if name in tracing_query.TARGETS:
                figure["passed"] = within
                verdict = f"{'PASS' if within else 'FAIL'} <= {bar:.0f}"
            else:
                figure["within_bar"] = within
                verdict = f"{'within' if within else 'over'} {bar:.0f} ms, context"
            line += f" ({verdict}; {figure['ratio_to_bare_p95']:.1f}x bare SQL)"
        print(line)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=400, help="requests of 512 spans")
    parser.add_argument("--clients", type=int, default=4, help="concurrent connections")
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    parser.add_argument("--query-spans", type=int, default=1_000_000, help="0: skip queries")
    parser.add_argument("--repeats", type=int, default=40, help="requests per query case")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    bench.WORK.mkdir(parents=True, exist_ok=True)
    batches = make_batches(args.batches + 1)
    rows = bare_rows(batches)
    results: dict[str, Any] = {"batch": BATCH, "batches": args.batches, "clients": args.clients}
    procs = bench.Processes()
    try:
        for kind in ("sqlite", "postgresql") if args.postgres else ("sqlite",):
            print(f"== {kind}: {args.batches * BATCH:,} spans in batches of {BATCH} ==")
            keel_url = fresh_database(kind, "tracing_keel")
            bare_url = fresh_database(kind, "tracing_bare")
            copy_rate = None
            try:
                keel_rate = run_keel(procs, keel_url, batches, args.clients)
                bare_rate = run_bare(bare_url, rows)
                if kind == "postgresql":
                    drop_database(bare_url)
                    bare_url = fresh_database(kind, "tracing_bare")
                    copy_rate = run_bare_copy(bare_url, rows)
            finally:
                drop_database(keel_url)
                drop_database(bare_url)
            ratio = keel_rate / bare_rate
            passed = keel_rate >= TARGET_SPANS_PER_S
            copy_note = (
                f", bare COPY {copy_rate:,.0f} rows/s (ratio {keel_rate / copy_rate:.2f})"
                if copy_rate
                else ""
            )
            print(
                f"  {kind}: keel {keel_rate:,.0f} spans/s (target >= {TARGET_SPANS_PER_S:,}: "
                f"{'PASS' if passed else 'FAIL'}), bare INSERT {bare_rate:,.0f} rows/s, "
                f"ratio {ratio:.2f}{copy_note}"
            )
            results[kind] = {
                "keel_spans_per_s": keel_rate,
                "bare_rows_per_s": bare_rate,
                "ratio": ratio,
                "bare_copy_rows_per_s": copy_rate,
                "target_spans_per_s": TARGET_SPANS_PER_S,
                "passed": passed,
            }
        if args.query_spans:
            print(f"== queries: {args.query_spans:,} spans in SQLite ==")
            results["query"] = report_queries(
                tracing_query.run(procs, args.query_spans, args.repeats)
            )
    finally:
        procs.stop_all()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"JSON written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
