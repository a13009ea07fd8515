"""The SDK's cost on the calling thread: an observed call vs a bare call vs an OTel SDK span.

Side by side in one run, each the median over `--repeat` timeit rounds of 1,000 calls of
the same small function (two arguments, returns a dict):
- bare: the function itself;
- keel: `@keel.observe` (capture on, the exporter pointed at a local sink that accepts
  everything; the queue is flushed before every round so it never fills);
- otel: the same function inside `tracer.start_as_current_span(...)` of the official
  OpenTelemetry SDK with a BatchSpanProcessor (its exporter discards), setting the same
  two arguments as attributes.
Figure: keel - bare (target <= 15 us) and the ratio to the OTel SDK's own overhead.

    python benchmarks/sdk_overhead.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import timeit
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import keel

TARGET_US = 15.0
RESULTS = Path(__file__).resolve().parent / "results" / "sdk_overhead.json"


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def step(question: str, k: int = 3) -> dict[str, object]:
    return {"answer": question, "k": k}


def median_us(fn: Callable[[], object], repeat: int, setup: Callable[[], object]) -> float:
    rounds = timeit.repeat(fn, setup=setup, number=1000, repeat=repeat)
    return statistics.median(rounds) / 1000 * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=100)
    args = parser.parse_args()
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    keel.configure(host=f"http://127.0.0.1:{sink.server_port}", flush_interval_s=60.0)
    observed = keel.observe(name="step", kind="retrieval")(step)

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard()))
    tracer = provider.get_tracer("bench")

    def with_otel() -> object:
        with tracer.start_as_current_span("step") as span:
            span.set_attribute("question", "what is keel?")
            span.set_attribute("k", 5)
            return step("what is keel?", k=5)

    flush = lambda: keel.flush(5)  # noqa: E731
    results: dict[str, float] = {}
    for _ in range(3):  # interleave: a noisy machine hits every variant alike
        for name, fn in (
            ("bare", lambda: step("what is keel?", k=5)),
            ("keel", lambda: observed("what is keel?", k=5)),
            ("otel", with_otel),
        ):
            value = median_us(fn, args.repeat // 3 or 1, flush)
            results[name] = min(results.get(name, value), value)
    keel.shutdown()
    provider.shutdown()
    sink.shutdown()
    keel_us = results["keel"] - results["bare"]
    otel_us = results["otel"] - results["bare"]
    passed = keel_us <= TARGET_US
    print(f"bare call        {results['bare']:7.2f} us")
    print(f"@keel.observe    {results['keel']:7.2f} us  (+{keel_us:.2f} us)")
    print(f"OTel SDK span    {results['otel']:7.2f} us  (+{otel_us:.2f} us)")
    print(
        f"keel span overhead {keel_us:.2f} us (target <= {TARGET_US:g}: "
        f"{'PASS' if passed else 'FAIL'}); keel / OTel SDK overhead {keel_us / otel_us:.2f}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "median_us": results,
                "keel_overhead_us": keel_us,
                "otel_overhead_us": otel_us,
                "target_us": TARGET_US,
                "passed": passed,
                "method": "timeit medians of rounds of 1000 calls, best of 3 interleaved passes",
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
