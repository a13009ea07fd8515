"""The prompt registry's costs on the calling thread, side by side with their baselines.

A real `keel serve` (SQLite, in a temporary folder) holds examples/prompts; then, each
figure the median over `--repeat` timeit rounds:
- `keel.get_prompt("rag_qa")` on a warm cache (target <= 5 us), beside a plain dict lookup
  and beside the same call for a label in a 10% rollout (a hash per call);
- `prompt.render(context=..., query=...)` of the example chat prompt, which includes
  another prompt (target <= 50 us), beside `str.format` of the same two messages: the
  floor of any templating.
The gateway's figure (a request naming a prompt vs the same messages inline, <= 0.1 ms
p50) is measured in benchmarks/gateway.py, in the same run as its other figures.

    python benchmarks/prompts.py
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keel
from keel.prompts.files import load_prompt_file, prompt_files

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "prompts.json"
TARGET_GET_US = 5.0
TARGET_RENDER_US = 50.0
VARIABLES = {
    "context": "[Source: warranty.md] The warranty lasts two years from the date of purchase.",
    "query": "How long is the warranty?",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _send(base: str, method: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def start_keel(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`keel serve` on a fresh SQLite file with a one-alias config; its base URL."""
    config = folder / "keel.yaml"
    config.write_text(
        "models:\n  fast:\n    deployments:\n      - provider: openai\n"
        "        model: gpt-4o-mini\n        api_base: http://127.0.0.1:9/v1\n"
    )
    port = _free_port()
    env = {**os.environ, "KEEL_DATABASE_URL": f"sqlite:///{folder / 'keel.db'}"}
    argv = [sys.executable, "-m", "keel.cli.main", "serve", "--config", str(config)]
    server = subprocess.Popen([*argv, "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/health", timeout=1).read()
            return server, base
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("keel serve did not start")


def seed(base: str) -> None:
    """Push examples/prompts; rag_qa v1 on production and a v2 rolling out on canary."""
    documents = [
        {"document": load_prompt_file(path)[0].as_document()}
        for path in prompt_files([ROOT / "examples" / "prompts"])
    ]
    _send(base, "POST", "/api/prompts/push", {"prompts": documents, "author": "bench"})
    rag_qa = next(d["document"] for d in documents if d["document"]["name"] == "rag_qa")
    rag_qa["tags"] = [*rag_qa.get("tags", []), "v2"]
    _send(base, "POST", "/api/prompts/push", {"prompts": [{"document": rag_qa}]})
    _send(base, "PUT", "/api/prompts/rag_qa/labels/production", {"version": 1})
    _send(base, "PUT", "/api/prompts/rag_qa/labels/canary", {"version": 1})
    _send(base, "POST", "/api/prompts/rag_qa/labels/canary/rollout", {"version": 2, "weight": 10})


def per_call_us(call: Callable[[], object], number: int, repeat: int) -> float:
    """Median over `repeat` rounds of the time per call, in microseconds."""
    rounds = timeit.repeat(call, number=number, repeat=repeat)
    return statistics.median(rounds) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=25)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server, base = start_keel(Path(tmp))
        try:
            seed(base)
            keel.configure(host=base)
            prompt = keel.get_prompt("rag_qa")
            keel.get_prompt("rag_qa", label="canary", unit="user:1")
            prompt.render(**VARIABLES)
            table = {"rag_qa": prompt}
            templates = [m["content"] for m in prompt.template.as_document()["messages"]]
            formats = [t.replace("{{ ", "{").replace(" }}", "}") for t in templates]
            formats[0] = formats[0].replace('{% include "house_style" %}', "")
            n = 20_000
            figures = {
                "dict_lookup_us": per_call_us(lambda: table.get("rag_qa"), n, args.repeat),
                "get_prompt_warm_us": per_call_us(
                    lambda: keel.get_prompt("rag_qa"), n, args.repeat
                ),
                "get_prompt_rollout_us": per_call_us(
                    lambda: keel.get_prompt("rag_qa", label="canary", unit="user:42"),
                    n,
                    args.repeat,
                ),
                "str_format_us": per_call_us(
                    lambda: [f.format(**VARIABLES) for f in formats], 2_000, args.repeat
                ),
                "render_us": per_call_us(lambda: prompt.render(**VARIABLES), 2_000, args.repeat),
            }
        finally:
            keel.shutdown()
            server.terminate()
            server.wait(timeout=10)

    get_ok = figures["get_prompt_warm_us"] <= TARGET_GET_US
    render_ok = figures["render_us"] <= TARGET_RENDER_US
    rows = [
        ("get_prompt, warm cache", figures["get_prompt_warm_us"], f"<= {TARGET_GET_US:g}", get_ok,
         f"{figures['get_prompt_warm_us'] / figures['dict_lookup_us']:.1f}x a dict lookup "
         f"({figures['dict_lookup_us']:.3f} us)"),
        ("get_prompt, label in a 10% rollout", figures["get_prompt_rollout_us"], "", None,
         "one hash of the unit per call"),
        ("render the example chat prompt", figures["render_us"], f"<= {TARGET_RENDER_US:g}",
         render_ok, f"{figures['render_us'] / figures['str_format_us']:.1f}x str.format of the "
         f"same messages ({figures['str_format_us']:.2f} us)"),
    ]  # fmt: skip
    print(f"{'figure':<40}{'us':>9}  {'target':<8}{'result':<8}detail")
    for name, value, target, ok, detail in rows:
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        print(f"{name:<40}{value:>9.2f}  {target:<8}{verdict:<8}{detail}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    targets = {"get_us": TARGET_GET_US, "render_us": TARGET_RENDER_US}
    report = {"figures": figures, "targets": targets, "repeat": args.repeat}
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"JSON written to {args.output}")
    return 0 if get_ok and render_ok else 1


if __name__ == "__main__":
    sys.exit(main())
