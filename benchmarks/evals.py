"""The eval runner's wall time against the ideal, and a cached re-run against the first run.

A real `keel serve` (SQLite, temporary folder) in front of a fake upstream that answers
after 50 ms. A dataset of 1,000 items is run with 3 evaluators (an LLM judge, `contains`,
`length`) at concurrency 64, results stored through the REST API as the CLI does. Every
item makes two model calls (the task, then the judge), so the ideal wall time is
calls × 50 ms / 64. Targets: the run within 2× the ideal; a re-run served from the
response cache at least 20× faster than the first run.

    python benchmarks/evals.py [--items 1000] [--concurrency 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from keel.cli.api_client import KeelApi
from keel.cli.eval_api import ApiEvalBackend
from keel.evals.gateway_client import GatewayChatModel
from keel.evals.registry import EvaluatorSpec, Services, builtin_registry
from keel.evals.response_cache import CachingChatModel, ResponseCache
from keel.evals.runner import Runner, RunSpec
from keel.evals.summary import summarize_run, summary_to_json
from keel.evals.tasks import ModelTask
from keel.settings import packaged_prices

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "evals.json"
LATENCY_S = 0.050
TARGET_IDEAL_RATIO = 2.0
TARGET_CACHE_SPEEDUP = 20.0
JUDGE_REPLY = '{"reason": "The answer addresses the question.", "score": 4}'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def start(folder: Path) -> tuple[list[subprocess.Popen[bytes]], str]:
    """The fake upstream (50 ms) and `keel serve` in front of it; Keel's base URL."""
    fake_port, port = _free_port(), _free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "keel.testing", "--port", str(fake_port),
         "--latency-ms", str(LATENCY_S * 1000), "--reply", JUDGE_REPLY],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    _wait(f"http://127.0.0.1:{fake_port}/v1/models", fake)
    config = folder / "keel.yaml"
    config.write_text(
        "models:\n"
        + "".join(
            f"  {alias}:\n    deployments:\n      - provider: openai\n"
            f"        model: gpt-4o-mini\n        api_base: http://127.0.0.1:{fake_port}/v1\n"
            for alias in ("fast", "judge")
        )
    )
    env = {**os.environ, "KEEL_DATABASE_URL": f"sqlite:///{folder / 'keel.db'}"}
    server = subprocess.Popen(
        [sys.executable, "-m", "keel.cli.main", "serve", "--config", str(config),
         "--port", str(port)],
        env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    _wait(base + "/health", server)
    return [fake, server], base


async def run_once(
    backend: ApiEvalBackend,
    model: CachingChatModel,
    cache: ResponseCache,
    items: int,
    concurrency: int,
    dataset_name: str,
) -> tuple[float, int]:
    """One full run; (wall seconds, results served from the cache)."""
    dataset = backend.dataset(dataset_name, None)
    services = Services(judge=model, judge_model="judge")
    evaluators = builtin_registry().build_all(
        [
            EvaluatorSpec("llm_rubric", params={"rubric": "Does the answer address the question?"}),
            EvaluatorSpec("contains", params={"value": "score"}),
            EvaluatorSpec("length", params={"max": 2000}),
        ],
        services,
    )
    names = [e.name for e in evaluators]
    spec = RunSpec(
        "bench", dataset, ModelTask(model, "fast"), evaluators, concurrency=concurrency,
        cache=cache, cache_scope="bench",
    )  # fmt: skip

    def summarise(run: object, results: list[object]) -> dict[str, object]:
        return summary_to_json(summarize_run(results, evaluators=names))  # type: ignore[arg-type]

    started = time.perf_counter()
    run = await Runner(backend, summarise=summarise).run(spec)  # type: ignore[arg-type]
    wall = time.perf_counter() - started
    results = await backend.results(run.run_id)
    assert len(results) == items, (len(results), items)
    assert all(r.verdicts["llm_rubric"].ok for r in results), "a judge verdict failed"
    return wall, sum(r.cached for r in results)


async def first_and_again(
    backend: ApiEvalBackend,
    base: str,
    cache: ResponseCache,
    items: int,
    concurrency: int,
    name: str,
) -> tuple[float, float]:
    """A first run (every call made), then the same run again (every call from the cache)."""
    gateway = GatewayChatModel(base + "/v1", prices=packaged_prices())
    model = CachingChatModel(gateway, cache, namespace=base)
    try:
        first, hits = await run_once(backend, model, cache, items, concurrency, name)
        assert hits == 0, hits
        again, hits = await run_once(backend, model, cache, items, concurrency, name)
        assert hits == items, hits
    finally:
        gateway.close()
    return first, again


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    calls = args.items * 2
    ideal = calls * LATENCY_S / args.concurrency

    firsts: list[float] = []
    cached_runs: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        processes, base = start(Path(tmp))
        try:
            api = KeelApi(base, timeout_s=120)
            backend = ApiEvalBackend(api)
            for round_ in range(args.rounds):
                name = f"bench{round_}"
                api.post("/api/datasets", {
                    "name": name,
                    "items": [{"id": f"q{i}", "input": f"Question number {i}?"}
                              for i in range(args.items)],
                })  # fmt: skip
                cache = ResponseCache(Path(tmp) / f"cache{round_}.sqlite")
                first, again = asyncio.run(
                    first_and_again(backend, base, cache, args.items, args.concurrency, name)
                )
                cache.close()
                firsts.append(first)
                cached_runs.append(again)
                print(f"round {round_ + 1}: first run {first:.2f} s, cached re-run {again:.3f} s")
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(timeout=15)

    first = statistics.median(firsts)
    again = statistics.median(cached_runs)
    ratio = first / ideal
    speedup = first / again
    ok_ratio = ratio <= TARGET_IDEAL_RATIO
    ok_speedup = speedup >= TARGET_CACHE_SPEEDUP
    print(
        f"\n{args.items} items x 3 evaluators (one a judge), {calls} model calls of "
        f"{LATENCY_S * 1000:.0f} ms at concurrency {args.concurrency}; "
        f"medians of {args.rounds} rounds"
    )
    print(f"ideal (calls x latency / concurrency)  {ideal:8.2f} s")
    print(f"first run                              {first:8.2f} s   {ratio:.2f}x ideal "
          f"(target <= {TARGET_IDEAL_RATIO:g}x)  {'PASS' if ok_ratio else 'FAIL'}")  # fmt: skip
    print(f"re-run from the cache                  {again:8.3f} s   {speedup:.1f}x faster "
          f"(target >= {TARGET_CACHE_SPEEDUP:g}x)  {'PASS' if ok_speedup else 'FAIL'}")  # fmt: skip
    report = {
        "items": args.items, "concurrency": args.concurrency, "latency_ms": LATENCY_S * 1000,
        "rounds": args.rounds, "ideal_s": ideal, "first_runs_s": firsts,
        "cached_runs_s": cached_runs, "ideal_ratio": ratio, "cache_speedup": speedup,
        "targets": {"ideal_ratio": TARGET_IDEAL_RATIO, "cache_speedup": TARGET_CACHE_SPEEDUP},
    }  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"JSON written to {args.output}")
    return 0 if ok_ratio and ok_speedup else 1


if __name__ == "__main__":
    sys.exit(main())
