"""The gateway's performance targets, measured side by side in one run and printed as ratios.

What it measures (every server on 127.0.0.1, against Keel's fake upstream answering at once,
Keel recording every call into SQLite with `capture: {messages: true}`):

1. Added latency at concurrency 1: wrk -> fake directly vs wrk -> keel -> fake.
   p50 and p99 of each, and the added p50/p99 (targets: <= 0.3 ms and <= 1.5 ms).
2. Throughput at concurrency 50, one Keel worker, vs a bare pass-through proxy
   (benchmarks/passthrough.py: the same uvicorn + uvloop + httptools server and the same
   upstream client, keel.providers.http1, forwarding bytes only). Target: Keel /
   pass-through >= 0.8. The same bare proxy on aiohttp (Keel's former client) runs beside
   them for context.
3. Streaming: added cost per SSE chunk, from the p50 request latency at concurrency 1 of
   200-chunk and 1-chunk streams of the same text, direct and through Keel:
   ((keel_200 - direct_200) - (keel_1 - direct_1)) / 199. Target: <= 30 us.
4. Memory: a fresh Keel's VmRSS, gateway plus recording process, after ~100k requests
   vs after ~10k (c50, queue drained before reading). Target: ratio <= 1.2.
6. A request that names a prompt (`"prompt": {"name": "rag_qa", ...}`: resolved from the
   in-process cache, rendered, the version recorded) vs the same request with the
   rendered messages inline, both through Keel at concurrency 1. Target: <= 0.1 ms p50.
5. LiteLLM's proxy (pinned version, own virtualenv in benchmarks/.work/litellm-venv, one
   worker, offline) on the same loads: Keel/LiteLLM throughput (goal >= 30x) and LiteLLM's
   added p50 / Keel's added p50 (goal >= 10x).

How: the machine is small and noisy, so no single absolute time is trusted. Every figure
is the median of `--rounds` rounds, and within a round the compared targets run one after
the other in an order that rotates from round to round. The load generator is wrk (Lua
scripts written to benchmarks/.work/ at run time give it the POST bodies and print exact
microsecond percentiles as JSON). Every subprocess runs in its own process group and is
killed on exit, also on Ctrl-C. Results go to stdout as a table and to
benchmarks/results/gateway.json.

    python benchmarks/gateway.py               # full run, ~6-8 minutes
    python benchmarks/gateway.py --quick --skip-litellm   # smoke run, < 1 minute
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"
RESULTS = ROOT / "benchmarks" / "results" / "gateway.json"
VENV_BIN = Path(sys.executable).parent
LITELLM_VERSION = "1.100.5"  # newer releases need a certifi newer than PyPI mirrors carry here
LITELLM_VENV = WORK / "litellm-venv"
MASTER_KEY = "sk-bench"
STREAM_CHUNKS = 200
# The same text is streamed in STREAM_CHUNKS pieces or in one, so only the framing differs.
STREAM_REPLY = ("The quick brown fox jumps over the lazy dog. " * 40)[:1000]
CHAT_BODY = {"model": "bench", "messages": [{"role": "user", "content": "Hello, how are you?"}]}

# -- targets ---------------------------------------------------------------------------------

TARGET_ADDED_P50_MS = 0.3
TARGET_ADDED_P99_MS = 1.5
TARGET_THROUGHPUT_RATIO = 0.8
TARGET_CHUNK_US = 30.0
TARGET_RSS_RATIO = 1.2
TARGET_PROMPT_ADDED_MS = 0.1
PROMPT_VARIABLES = {
    "context": "[Source: warranty.md] The warranty lasts two years from the date of purchase.",
    "query": "How long is the warranty?",
}
GOAL_LITELLM_THROUGHPUT = 30.0
GOAL_LITELLM_ADDED_P50 = 10.0


@dataclass(frozen=True, slots=True)
class Durations:
    """Seconds per measured wrk run and per warm-up, and the memory checkpoints."""

    c1_s: int
    c50_s: int
    stream_s: int
    warmup_s: int
    memory_first: int
    memory_second: int


FULL = Durations(
    c1_s=5, c50_s=5, stream_s=4, warmup_s=2, memory_first=10_000, memory_second=100_000
)
QUICK = Durations(c1_s=1, c50_s=1, stream_s=1, warmup_s=1, memory_first=1_000, memory_second=10_000)


# -- wrk --------------------------------------------------------------------------------------

# wrk's own latency figures are corrected for coordinated omission (`stats_correct`: every
# response slower than the mean interval adds synthetic samples), which at concurrency 1
# turns a few rare stalls into a large p99. For the latency targets the scripts therefore
# also time every request themselves (LuaJIT FFI clock_gettime, from `request()` to
# `response()`) and hand the raw samples back through `thread:get`; both are reported.
_DONE_HOOK = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,'
    .. '"mean_us":%.2f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
  if SAMPLES_PATH then
    local f = io.open(SAMPLES_PATH, "w")
    for _, t in ipairs(threads) do
      local samples = t:get("samples")
      for i = 1, #samples do f:write(string.format("%.1f\\n", samples[i])) end
    end
    f:close()
  end
end
"""

_TIMER = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } keel_timespec;
int clock_gettime(int clock, keel_timespec *tp);
]]
local ts = ffi.new("keel_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end
threads = {}
setup = function(thread) table.insert(threads, thread) end
samples = {}
local count, sent = 0, 0
request = function()
  sent = now_us()
  return wrk.format()
end
response = function(status, headers, body)
  count = count + 1
  samples[count] = now_us() - sent
end
"""


def lua_script(
    name: str, body: dict[str, Any], headers: dict[str, str], *, timed: bool = False
) -> Path:
    """A wrk script POSTing `body` with `headers`, reporting as one WRKJSON line.

    `timed` (for concurrency 1 only: one `sent` per thread) also records every request's
    own latency into benchmarks/.work/<name>.samples.
    """
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(json.dumps(body))}"]
    for key, value in {"Content-Type": "application/json", **headers}.items():
        lines.append(f"wrk.headers[{_lua_string(key)}] = {_lua_string(value)}")
    if timed:
        lines.append(f"SAMPLES_PATH = {_lua_string(str(WORK / (name + '.samples')))}")
        lines.append(_TIMER)
    path = WORK / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n" + _DONE_HOOK)
    return path


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: request count, rate, latency percentiles, errors.

    p50/p99 are the raw per-request figures when the script was `timed`, else wrk's;
    `wrk_p99_ms` is always wrk's own (coordinated-omission corrected) p99.
    """

    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    wrk_p99_ms: float
    errors: int
    raw: bool


def run_wrk(
    url: str, script: Path, *, connections: int, seconds: int, cpu: str | None = None
) -> WrkResult:
    """Run wrk for `seconds` with `connections` (one wrk thread) and parse its WRKJSON line."""
    samples_path = script.with_suffix(".samples")
    samples_path.unlink(missing_ok=True)
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    argv += ["-s", str(script), url]
    if cpu is not None:
        argv = ["taskset", "-c", cpu, *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            raw = json.loads(line[8:])
            duration = raw["duration_us"] / 1e6
            errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
            p50, p90, p99, top = (raw[k] / 1000 for k in ("p50_us", "p90_us", "p99_us", "max_us"))
            timed = samples_path.exists()
            if timed:
                values = sorted(float(x) / 1000 for x in samples_path.read_text().split())
                if values:
                    p50, p90, p99 = (_percentile(values, q) for q in (50, 90, 99))
                    top = values[-1]
            return WrkResult(
                requests=raw["requests"],
                duration_s=duration,
                rps=raw["requests"] / duration if duration else 0.0,
                p50_ms=p50,
                p90_ms=p90,
                p99_ms=p99,
                max_ms=top,
                wrk_p99_ms=raw["p99_us"] / 1000,
                errors=errors,
                raw=timed,
            )
    raise RuntimeError(f"wrk gave no result for {url}: {done.stdout[-500:]}{done.stderr[-500:]}")


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# -- processes --------------------------------------------------------------------------------


class Processes:
    """Every server this run starts; `stop_all` kills their process groups."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> int:
        log = (WORK / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=WORK,
            start_new_session=True,  # own process group: killed as a whole, spared the Ctrl-C
        )
        log.close()
        self._procs.append((name, proc))
        return proc.pid

    def alive(self, pid: int) -> bool:
        return any(p.pid == pid and p.poll() is None for _, p in self._procs)

    def stop(self, pid: int) -> None:
        for name, proc in list(self._procs):
            if proc.pid == pid:
                _terminate(proc)
                self._procs.remove((name, proc))

    def stop_all(self) -> None:
        while self._procs:
            _, proc = self._procs.pop()
            _terminate(proc)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (worker processes)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def wait_ready(
    procs: Processes, pid: int, url: str, name: str, timeout_s: float = 60.0, **headers: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not procs.alive(pid):
            raise RuntimeError(f"{name} exited at start; see {WORK / (name + '.log')}")
        try:
            http_get(url, headers)
            return
        except urllib.error.HTTPError:
            return  # it answers: ready (the pass-through forwards POSTs only)
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} not ready within {timeout_s:.0f}s; see {WORK / (name + '.log')}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (Keel's recording process)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def tree_rss_mb(pid: int) -> tuple[float, float]:
    """VmRSS of `pid` and the sum over its child processes."""
    return rss_mb(pid), sum(rss_mb(child) for child in children(pid))


# -- the servers ------------------------------------------------------------------------------


@dataclass(slots=True)
class Servers:
    fake: str = ""  # base URL of the non-streaming fake
    fake_n: str = ""  # streams STREAM_CHUNKS pieces
    fake_1: str = ""  # streams one piece
    keel: str = ""
    keel_pid: int = 0
    passthrough: str = ""
    passthrough_aiohttp: str = ""  # context only: the client Keel used before its own
    litellm: str | None = None
    litellm_pid: int = 0
    litellm_error: str | None = None
    fake_ports: dict[str, int] = field(default_factory=dict)


def start_fake(procs: Processes, name: str, *extra: str) -> tuple[str, int]:
    port = free_port()
    pid = procs.start(name, [sys.executable, "-m", "keel.testing", "--port", str(port), *extra])
    base = f"http://127.0.0.1:{port}"
    wait_ready(procs, pid, base + "/v1/models", name)
    return base, port


def keel_config(servers: Servers, path: Path) -> None:
    def alias(port: int) -> str:
        return (
            "    deployments:\n"
            "      - provider: openai\n"
            "        model: gpt-4o-mini\n"
            f"        api_base: http://127.0.0.1:{port}/v1\n"
        )

    ports = servers.fake_ports
    path.write_text(
        "models:\n"
        f"  bench:\n{alias(ports['fake'])}"
        f"  stream{STREAM_CHUNKS}:\n{alias(ports['fake_n'])}"
        f"  stream1:\n{alias(ports['fake_1'])}"
        "capture: {messages: true}\n"
    )


def start_keel(procs: Processes, name: str, config: Path, db: Path) -> tuple[str, int]:
    port = free_port()
    env = {"KEEL_DATABASE_URL": f"sqlite:///{db}", "KEEL_LOG_LEVEL": "warning"}
    argv = [str(VENV_BIN / "keel"), "serve", "--config", str(config), "--port", str(port)]
    pid = procs.start(name, argv, env)
    base = f"http://127.0.0.1:{port}"
    wait_ready(procs, pid, base + "/health", name)
    return base, pid


def keel_health(base: str) -> dict[str, int]:
    recording: dict[str, int] = json.loads(http_get(base + "/health"))["recording"]
    return recording


def wait_drained(base: str, timeout_s: float = 30.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    stats = keel_health(base)
    while stats["queued"] > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
        stats = keel_health(base)
    return stats


def start_litellm(procs: Processes, servers: Servers) -> None:
    """Start LiteLLM's proxy on the non-streaming fake, installing it once if needed."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} (once) ...")
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=False)
        done = subprocess.run(
            [
                str(LITELLM_VENV / "bin" / "pip"),
                "install",
                "-q",
                f"litellm[proxy]=={LITELLM_VERSION}",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0 or not exe.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise RuntimeError(f"pip install litellm[proxy]=={LITELLM_VERSION} failed: {tail}")
    config = WORK / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: {servers.fake}/v1\n"
        "      api_key: sk-dummy\n"
        "litellm_settings:\n"
        "  telemetry: False\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
    )
    port = free_port()
    env = {
        "LITELLM_MASTER_KEY": MASTER_KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        # Offline: anything LiteLLM tries to fetch from outside fails at once on a closed port.
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    argv = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", "1", "--telemetry", "False"]
    pid = procs.start("litellm", argv, env)
    base = f"http://127.0.0.1:{port}"
    wait_ready(procs, pid, base + "/health/liveliness", "litellm", timeout_s=180)
    servers.litellm, servers.litellm_pid = base, pid


def litellm_version() -> str | None:
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.strip() or None


# -- measuring --------------------------------------------------------------------------------


def rotate(items: Sequence[str], by: int) -> list[str]:
    by %= len(items)
    return [*items[by:], *items[:by]]


def rounds_of(
    targets: dict[str, Callable[[], WrkResult]], rounds: int, label: str
) -> dict[str, list[WrkResult]]:
    """Run every target once per round, in an order rotating across rounds."""
    out: dict[str, list[WrkResult]] = {name: [] for name in targets}
    for r in range(rounds):
        for name in rotate(list(targets), r):
            result = targets[name]()
            out[name].append(result)
            print(
                f"  [{label} round {r + 1}/{rounds}] {name:<12} {result.rps:9.0f} req/s  "
                f"p50 {result.p50_ms:7.3f} ms  p99 {result.p99_ms:7.3f} ms"
                + (f"  (wrk's corrected p99 {result.wrk_p99_ms:.3f} ms)" if result.raw else "")
                + (f"  ERRORS {result.errors}" if result.errors else ""),
                flush=True,
            )
    return out


def med(results: list[WrkResult], attr: str) -> float:
    return float(statistics.median(float(getattr(r, attr)) for r in results))


def ratio(a: float, b: float) -> float:
    return a / b if b else math.inf


# -- the run ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    name: str
    value: float
    unit: str
    target: str
    passed: bool | None  # None: informational
    detail: str = ""


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Keel gateway benchmark: latency, throughput, streaming, memory, LiteLLM."
    )
    parser.add_argument("--quick", action="store_true", help="short runs, a smoke test (< 1 min)")
    parser.add_argument("--skip-litellm", action="store_true", help="do not run LiteLLM")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5, quick 2)")
    parser.add_argument("--wrk-cpu", default=None, help="pin wrk with taskset -c (e.g. 1)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        print("wrk is not installed: run `apt-get install -y wrk` (as root), then retry.")
        return 2
    rounds = args.rounds or (2 if args.quick else 5)
    durations = QUICK if args.quick else FULL
    WORK.mkdir(parents=True, exist_ok=True)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # A shell may start us with SIGINT ignored (`cmd &`); Ctrl-C must still clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    lock = (WORK / ".lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another benchmark run is using {WORK}; wait for it to finish")
        return 2
    procs = Processes()
    started = time.monotonic()
    try:
        report = run(procs, args, rounds, durations)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers")
        return 130
    finally:
        procs.stop_all()
    report["meta"]["wall_s"] = round(time.monotonic() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwall time {report['meta']['wall_s']:.0f} s; JSON written to {args.output}")
    return 0


def run(procs: Processes, args: argparse.Namespace, rounds: int, d: Durations) -> dict[str, Any]:
    for stale in WORK.glob("bench*.db*"):
        stale.unlink()
    meta = machine_info(rounds, d, args)
    print_meta(meta)

    servers = Servers()
    servers.fake, servers.fake_ports["fake"] = start_fake(procs, "fake")
    reply = ["--reply", STREAM_REPLY]
    servers.fake_n, servers.fake_ports["fake_n"] = start_fake(
        procs, "fake-stream-n", "--chunks", str(STREAM_CHUNKS), *reply
    )
    servers.fake_1, servers.fake_ports["fake_1"] = start_fake(
        procs, "fake-stream-1", "--chunks", "1", *reply
    )
    config = WORK / "keel-bench.yaml"
    keel_config(servers, config)
    servers.keel, servers.keel_pid = start_keel(procs, "keel", config, WORK / "bench.db")
    pt_pids = []
    for name, client in (("passthrough", "keel"), ("passthrough-aiohttp", "aiohttp")):
        pt_port = free_port()
        pt_argv = [sys.executable, str(ROOT / "benchmarks" / "passthrough.py")]
        pt_argv += ["--upstream", servers.fake, "--port", str(pt_port), "--client", client]
        pt_pids.append(procs.start(name, pt_argv))
        base = f"http://127.0.0.1:{pt_port}"
        wait_ready(procs, pt_pids[-1], base + "/v1/models", name)
        if client == "keel":
            servers.passthrough = base
        else:
            servers.passthrough_aiohttp = base

    if not args.skip_litellm:
        try:
            start_litellm(procs, servers)
            meta["litellm_version"] = litellm_version()
        except Exception as exc:
            servers.litellm_error = str(exc)
            print(f"LiteLLM comparison skipped: {exc}")
            if servers.litellm_pid:
                procs.stop(servers.litellm_pid)

    auth = {"Authorization": f"Bearer {MASTER_KEY}"}  # LiteLLM needs it; the others ignore it
    chat = lua_script("chat", CHAT_BODY, auth)
    chat_timed = lua_script("chat-c1", CHAT_BODY, auth, timed=True)
    inline_body, prompt_body = register_prompt(servers.keel)
    prompt_scripts = {
        "keel-inline": lua_script("prompt-inline", inline_body, auth, timed=True),
        "keel-prompt": lua_script("prompt-named", prompt_body, auth, timed=True),
    }
    path = "/v1/chat/completions"
    cpu = args.wrk_cpu

    def load(base: str, script: Path, conns: int, seconds: int) -> Callable[[], WrkResult]:
        return lambda: run_wrk(base + path, script, connections=conns, seconds=seconds, cpu=cpu)

    c1 = {"direct": servers.fake, "passthrough": servers.passthrough, "keel": servers.keel}
    c1["pt-aiohttp"] = servers.passthrough_aiohttp
    c50 = {"keel": servers.keel, "passthrough": servers.passthrough}
    c50["pt-aiohttp"] = servers.passthrough_aiohttp
    if servers.litellm:
        c1["litellm"] = servers.litellm
        c50["litellm"] = servers.litellm

    # 1 + 5: latency at concurrency 1
    print("\n== 1. added latency, concurrency 1 (recording on) ==")
    for base in c1.values():
        run_wrk(base + path, chat_timed, connections=1, seconds=d.warmup_s, cpu=cpu)
    c1_loads = {n: load(b, chat_timed, 1, d.c1_s) for n, b in c1.items()}
    for name, script in prompt_scripts.items():
        run_wrk(servers.keel + path, script, connections=1, seconds=d.warmup_s, cpu=cpu)
        c1_loads[name] = load(servers.keel, script, 1, d.c1_s)
    lat = rounds_of(c1_loads, rounds, "c1")

    # 2 + 5: throughput at concurrency 50
    print("\n== 2. throughput, concurrency 50, one worker (recording on) ==")
    for base in c50.values():
        run_wrk(base + path, chat, connections=50, seconds=d.warmup_s, cpu=cpu)
    thr = rounds_of({n: load(b, chat, 50, d.c50_s) for n, b in c50.items()}, rounds, "c50")
    if servers.litellm_pid:
        procs.stop(servers.litellm_pid)  # not needed any more: no idle load during the rest

    # 3: streaming
    print(f"\n== 3. streaming: {STREAM_CHUNKS} chunks vs 1 chunk, concurrency 1 ==")
    stream_targets: dict[str, Callable[[], WrkResult]] = {}
    for chunks, fake in ((STREAM_CHUNKS, servers.fake_n), (1, servers.fake_1)):
        body = {**CHAT_BODY, "model": f"stream{chunks}", "stream": True}
        script = lua_script(f"stream{chunks}", body, {}, timed=True)
        stream_targets[f"direct_{chunks}"] = load(fake, script, 1, d.stream_s)
        stream_targets[f"keel_{chunks}"] = load(servers.keel, script, 1, d.stream_s)
    for target in stream_targets.values():
        target()  # warm-up
    stream = rounds_of(stream_targets, rounds, "stream")

    # recording check on the main Keel, before it stops
    recording = wait_drained(servers.keel)
    traces = keel_traces(config, WORK / "bench.db")
    procs.stop(servers.keel_pid)
    for pid in pt_pids:
        procs.stop(pid)

    # 4: memory on a fresh Keel
    print(f"\n== 4. memory: VmRSS after {d.memory_first:,} vs {d.memory_second:,} requests ==")
    memory = measure_memory(procs, config, chat, d, cpu)

    return summarize(meta, servers, lat, thr, stream, memory, recording, traces)


def register_prompt(keel: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Push examples/prompts to `keel` (alias `bench`), label rag_qa production; return a
    request with the rendered messages inline and the same request naming the prompt."""
    sys.path.insert(0, str(ROOT / "src"))
    from keel.prompts.files import load_prompt_file, prompt_files

    documents = []
    for file in prompt_files([ROOT / "examples" / "prompts"]):
        document = load_prompt_file(file)[0].as_document()
        if "model" in document:
            document["model"] = {**document["model"], "alias": "bench"}
        documents.append({"document": document})
    auth = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}

    def send(method: str, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            keel + path, data=json.dumps(body).encode(), headers=auth, method=method
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    send("POST", "/api/prompts/push", {"prompts": documents, "author": "bench"})
    send("PUT", "/api/prompts/rag_qa/labels/production", {"version": 1})
    with urllib.request.urlopen(
        urllib.request.Request(keel + "/api/prompts/rag_qa/versions/production", headers=auth)
    ) as answer:
        version = json.loads(answer.read())
    named = {"prompt": {"name": "rag_qa", "variables": PROMPT_VARIABLES}}
    from keel.core.prompts import version_from_json
    from keel.core.templates import PromptRenderer

    included = {}
    for reference, number in version["pins"].items():
        with urllib.request.urlopen(
            urllib.request.Request(
                f"{keel}/api/prompts/{reference}/versions/{number}", headers=auth
            )
        ) as answer:
            included[f"{reference}@{number}"] = version_from_json(json.loads(answer.read()))
    messages = PromptRenderer(version_from_json(version), included).render(PROMPT_VARIABLES)
    inline = {"model": "bench", "messages": messages, **version["document"]["model"]}
    del inline["alias"]
    return inline, named


def keel_traces(config: Path, db: Path) -> int:
    """How many spans `keel traces list --json --since 1h --limit 5` prints (0 to 5)."""
    done = subprocess.run(
        [
            str(VENV_BIN / "keel"),
            "traces",
            "list",
            "--json",
            "--since",
            "1h",
            "--limit",
            "5",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "KEEL_DATABASE_URL": f"sqlite:///{db}"},
    )
    return sum(1 for line in done.stdout.splitlines() if line.startswith("{"))


def measure_memory(
    procs: Processes, config: Path, script: Path, d: Durations, cpu: str | None
) -> dict[str, Any]:
    base, pid = start_keel(procs, "keel-memory", config, WORK / "bench-memory.db")
    url = base + "/v1/chat/completions"
    rss_start = sum(tree_rss_mb(pid))
    served = errors = 0
    rate = 0.0
    points: dict[str, Any] = {"rss_start_mb": round(rss_start, 1)}
    deadline = time.monotonic() + 600
    for checkpoint in (d.memory_first, d.memory_second):
        while served < checkpoint and time.monotonic() < deadline:
            left = checkpoint - served
            seconds = 1 if rate == 0 else max(1, min(20, int(left / rate)))
            result = run_wrk(url, script, connections=50, seconds=seconds, cpu=cpu)
            served += result.requests
            errors += result.errors
            rate = result.rps or 1.0
        stats = wait_drained(base)
        gateway_rss, recorder_rss = tree_rss_mb(pid)
        rss = gateway_rss + recorder_rss
        points[f"after_{checkpoint}"] = {
            "requests": served,
            "wrk_errors": errors,
            "rss_mb": round(rss, 1),
            "gateway_rss_mb": round(gateway_rss, 1),
            "recording_process_rss_mb": round(recorder_rss, 1),
            "recording": stats,
        }
        print(
            f"  after {served:,} requests: VmRSS {rss:.1f} MB (gateway {gateway_rss:.1f}, "
            f"recording process {recorder_rss:.1f}); recording {stats}"
        )
    procs.stop(pid)
    first = points[f"after_{d.memory_first}"]["rss_mb"]
    second = points[f"after_{d.memory_second}"]["rss_mb"]
    points["ratio"] = round(second / first, 3)
    return points


def machine_info(rounds: int, d: Durations, args: argparse.Namespace) -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wrk": " ".join((wrk.stdout or wrk.stderr or "wrk ?").split()[:2]),
        "loadavg_at_start": os.getloadavg(),
        "rounds": rounds,
        "quick": bool(args.quick),
        "durations": asdict(d),
        "wrk_cpu": args.wrk_cpu,
        "litellm_version": None,
        "method": (
            "wrk -t1 (Lua POST bodies), one server process each, 127.0.0.1; medians over "
            "rounds whose target order rotates; fake upstream answers at once; Keel "
            "records every call to SQLite (capture.messages: true)"
        ),
        "command": "python benchmarks/gateway.py " + " ".join(sys.argv[1:]),
    }


def print_meta(meta: dict[str, Any]) -> None:
    print("Keel gateway benchmark")
    print(
        f"  machine: {meta['nproc']} CPUs ({meta['cpu']}), Python {meta['python']}, {meta['wrk']}"
    )
    print(f"  load average at start: {' '.join(f'{x:.2f}' for x in meta['loadavg_at_start'])}")
    print(f"  {meta['rounds']} rounds, order rotating; {meta['method']}")


def summarize(
    meta: dict[str, Any],
    servers: Servers,
    lat: dict[str, list[WrkResult]],
    thr: dict[str, list[WrkResult]],
    stream: dict[str, list[WrkResult]],
    memory: dict[str, Any],
    recording: dict[str, int],
    traces: int,
) -> dict[str, Any]:
    rows: list[Row] = []
    d50, d99 = med(lat["direct"], "p50_ms"), med(lat["direct"], "p99_ms")
    k50, k99 = med(lat["keel"], "p50_ms"), med(lat["keel"], "p99_ms")
    added50, added99 = k50 - d50, k99 - d99
    t50, t99 = med(lat["passthrough"], "p50_ms"), med(lat["passthrough"], "p99_ms")
    wrk99 = {name: med(results, "wrk_p99_ms") for name, results in lat.items()}
    rows += [
        Row("c1 direct p50 / p99", d50, "ms", "", None, f"p99 {d99:.3f} ms"),
        Row("c1 pass-through p50 / p99", t50, "ms", "", None, f"p99 {t99:.3f} ms"),
        Row("c1 keel p50 / p99", k50, "ms", "", None, f"p99 {k99:.3f} ms"),
        Row(
            "c1 pass-through via aiohttp p50 / p99",
            med(lat["pt-aiohttp"], "p50_ms"),
            "ms",
            "",
            None,
            f"p99 {med(lat['pt-aiohttp'], 'p99_ms'):.3f} ms (context: Keel's former client)",
        ),
        Row(
            "added p50",
            added50,
            "ms",
            f"<= {TARGET_ADDED_P50_MS}",
            added50 <= TARGET_ADDED_P50_MS,
            f"pass-through alone adds {t50 - d50:.3f} ms",
        ),
        Row(
            "added p99",
            added99,
            "ms",
            f"<= {TARGET_ADDED_P99_MS}",
            added99 <= TARGET_ADDED_P99_MS,
            f"pass-through alone adds {t99 - d99:.3f} ms",
        ),
        Row(
            "added p99, wrk's CO-corrected",
            wrk99["keel"] - wrk99["direct"],
            "ms",
            "",
            None,
            f"keel {wrk99['keel']:.3f} ms, direct {wrk99['direct']:.3f} ms",
        ),
    ]
    # A named prompt vs the same messages inline: the median of each round's difference.
    prompt_added = statistics.median(
        named.p50_ms - inline.p50_ms
        for named, inline in zip(lat["keel-prompt"], lat["keel-inline"], strict=True)
    )
    rows += [
        Row(
            "c1 prompt named / inline p50",
            med(lat["keel-prompt"], "p50_ms"),
            "ms",
            "",
            None,
            f"inline {med(lat['keel-inline'], 'p50_ms'):.3f} ms",
        ),
        Row(
            "added by naming a prompt, p50",
            prompt_added,
            "ms",
            f"<= {TARGET_PROMPT_ADDED_MS}",
            prompt_added <= TARGET_PROMPT_ADDED_MS,
        ),
    ]
    k_rps, p_rps = med(thr["keel"], "rps"), med(thr["passthrough"], "rps")
    # the ratio of each round, then their median: both ran back to back in that round
    thr_ratio = statistics.median(
        ratio(k.rps, p.rps) for k, p in zip(thr["keel"], thr["passthrough"], strict=True)
    )
    rows += [
        Row("c50 keel throughput", k_rps, "req/s", "", None),
        Row("c50 pass-through throughput", p_rps, "req/s", "", None),
        Row(
            "c50 pass-through via aiohttp",
            med(thr["pt-aiohttp"], "rps"),
            "req/s",
            "",
            None,
            "context: the same bare proxy on Keel's former client",
        ),
        Row(
            "keel / pass-through",
            thr_ratio,
            "x",
            f">= {TARGET_THROUGHPUT_RATIO}",
            thr_ratio >= TARGET_THROUGHPUT_RATIO,
        ),
    ]
    n = STREAM_CHUNKS
    s = {name: med(results, "p50_ms") for name, results in stream.items()}
    per_chunk_us = ((s[f"keel_{n}"] - s[f"direct_{n}"]) - (s["keel_1"] - s["direct_1"])) / (n - 1)
    per_chunk_us *= 1000
    rows += [
        Row(
            f"stream {n} chunks p50 direct / keel",
            s[f"direct_{n}"],
            "ms",
            "",
            None,
            f"keel {s[f'keel_{n}']:.3f} ms",
        ),
        Row(
            "stream 1 chunk p50 direct / keel",
            s["direct_1"],
            "ms",
            "",
            None,
            f"keel {s['keel_1']:.3f} ms",
        ),
        Row(
            "added cost per chunk",
            per_chunk_us,
            "us",
            f"<= {TARGET_CHUNK_US:g}",
            per_chunk_us <= TARGET_CHUNK_US,
        ),
    ]
    first_key = f"after_{meta['durations']['memory_first']}"
    second_key = f"after_{meta['durations']['memory_second']}"
    rows += [
        Row(
            f"RSS after {memory[first_key]['requests']:,} req",
            memory[first_key]["rss_mb"],
            "MB",
            "",
            None,
        ),
        Row(
            f"RSS after {memory[second_key]['requests']:,} req",
            memory[second_key]["rss_mb"],
            "MB",
            "",
            None,
            f"spans written {memory[second_key]['recording']['written']}, "
            f"dropped {memory[second_key]['recording']['dropped']}",
        ),
        Row(
            "RSS ratio",
            memory["ratio"],
            "x",
            f"<= {TARGET_RSS_RATIO}",
            memory["ratio"] <= TARGET_RSS_RATIO,
        ),
    ]
    litellm: dict[str, Any] = {
        "version": meta.get("litellm_version"),
        "error": servers.litellm_error,
    }
    if "litellm" in lat:
        l50, l99 = med(lat["litellm"], "p50_ms"), med(lat["litellm"], "p99_ms")
        l_added = l50 - d50
        l_rps = med(thr["litellm"], "rps")
        thr_x = statistics.median(
            ratio(k.rps, lt.rps) for k, lt in zip(thr["keel"], thr["litellm"], strict=True)
        )
        added_x = ratio(l_added, added50)
        litellm |= {
            "c1_p50_ms": l50,
            "c1_p99_ms": l99,
            "added_p50_ms": l_added,
            "c50_rps": l_rps,
            "throughput_ratio_keel_over_litellm": thr_x,
            "added_p50_ratio_litellm_over_keel": added_x,
            "errors": sum(r.errors for r in lat["litellm"] + thr["litellm"]),
        }
        rows += [
            Row("c1 litellm p50 / p99", l50, "ms", "", None, f"p99 {l99:.3f} ms"),
            Row("c50 litellm throughput", l_rps, "req/s", "", None),
            Row(
                "keel / litellm throughput",
                thr_x,
                "x",
                f">= {GOAL_LITELLM_THROUGHPUT:g}",
                thr_x >= GOAL_LITELLM_THROUGHPUT,
            ),
            Row(
                "litellm / keel added p50",
                added_x,
                "x",
                f">= {GOAL_LITELLM_ADDED_P50:g}",
                added_x >= GOAL_LITELLM_ADDED_P50,
            ),
        ]
    errors = {
        name: sum(r.errors for r in results)
        for group in (lat, thr, stream)
        for name, results in group.items()
    }
    recorded_ok = recording["written"] > 0 and recording["dropped"] == 0 and traces > 0
    rows.append(
        Row(
            "spans written (main keel)",
            recording["written"],
            "",
            "> 0, 0 dropped",
            recorded_ok,
            f"dropped {recording['dropped']}, rejected {recording['rejected']}, "
            f"`keel traces list` shows {traces}",
        )
    )
    print_table(rows, meta, servers, errors)
    return {
        "meta": meta,
        "rows": [asdict(r) for r in rows],
        "latency_c1": _series(lat),
        "throughput_c50": _series(thr),
        "stream_c1": _series(stream),
        "figures": {
            "added_p50_ms": added50,
            "added_p99_ms": added99,
            "throughput_ratio": thr_ratio,
            "stream_added_us_per_chunk": per_chunk_us,
            "rss_ratio": memory["ratio"],
        },
        "memory": memory,
        "litellm": litellm,
        "recording": {**recording, "traces_listed": traces},
        "wrk_errors": errors,
    }


def _series(group: dict[str, list[WrkResult]]) -> dict[str, Any]:
    return {
        name: {
            "median_rps": med(results, "rps"),
            "median_p50_ms": med(results, "p50_ms"),
            "median_p99_ms": med(results, "p99_ms"),
            "rounds": [asdict(r) for r in results],
        }
        for name, results in group.items()
    }


def print_table(
    rows: list[Row], meta: dict[str, Any], servers: Servers, errors: dict[str, int]
) -> None:
    print("\n" + "=" * 100)
    print(f"{'figure':<38}{'value':>14}  {'unit':<6}{'target':<16}{'result':<7}detail")
    print("-" * 100)
    for row in rows:
        value = f"{row.value:,.3f}" if abs(row.value) < 100 else f"{row.value:,.0f}"
        verdict = "" if row.passed is None else ("PASS" if row.passed else "FAIL")
        print(f"{row.name:<38}{value:>14}  {row.unit:<6}{row.target:<16}{verdict:<7}{row.detail}")
    print("-" * 100)
    if servers.litellm_error:
        print(f"LiteLLM: not measured: {servers.litellm_error}")
    elif meta.get("litellm_version"):
        print(f"LiteLLM {meta['litellm_version']} (proxy, 1 worker, master key, offline)")
    bad = {name: n for name, n in errors.items() if n}
    if bad:
        print(f"wrk errors (non-2xx, timeouts, socket): {bad}")
    print(
        f"{meta['nproc']} CPUs, Python {meta['python']}; medians of {meta['rounds']} rounds "
        f"({meta['durations']['c1_s']} s c1, {meta['durations']['c50_s']} s c50, "
        f"{meta['durations']['stream_s']} s stream per run); ratios, not absolute times, "
        "are what carries over between machines"
    )


if __name__ == "__main__":
    sys.exit(main())
