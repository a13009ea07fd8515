"""`make run`: start `keel serve` on SQLite with examples/keel.yaml and send it a short demo.

With a real OPENAI_API_KEY or ANTHROPIC_API_KEY in the environment the demo
talks to the real providers. Without one, every upstream in the config is
pointed at Keel's fake provider server (keel.testing) and each line printed
says SIMULATED. The gateway keeps serving afterwards until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from openai import OpenAI

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".keel"
PORT = int(os.environ.get("KEEL_PORT", "4000"))
FAKE_PORT = int(os.environ.get("KEEL_DEMO_FAKE_PORT", "4010"))


def main() -> int:
    WORK.mkdir(exist_ok=True)
    simulated = not (os.environ.get("OPENAI_API_KEY") or os.environ.get("ANTHROPIC_API_KEY"))
    tag = "[SIMULATED] " if simulated else ""
    env = {**os.environ, "KEEL_DATABASE_URL": f"sqlite:///{WORK / 'demo.db'}"}
    config = ROOT / "examples" / "keel.yaml"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        if simulated:
            print(
                f"{tag}No OPENAI_API_KEY or ANTHROPIC_API_KEY set: every upstream in "
                f"examples/keel.yaml is replaced by Keel's fake provider on port {FAKE_PORT}."
            )
            processes.append(
                _start([sys.executable, "-m", "keel.testing", "--port", str(FAKE_PORT)], env)
            )
            _wait(f"http://127.0.0.1:{FAKE_PORT}/v1/models")
            config = _simulated_config(config, f"http://127.0.0.1:{FAKE_PORT}")
            env.update(
                OPENAI_API_KEY="sk-simulated",
                VLLM_KEY="sk-simulated",
                ANTHROPIC_API_KEY="sk-simulated",
            )
        server = _start(
            [
                sys.executable,
                "-m",
                "keel.cli.main",
                "serve",
                "--config",
                str(config),
                "--port",
                str(PORT),
            ],
            env,
        )
        processes.append(server)
        _wait(f"http://127.0.0.1:{PORT}/health", process=server)
        _traffic(f"http://127.0.0.1:{PORT}/v1", tag)
        _wait_recorded(f"http://127.0.0.1:{PORT}/health")
        print(f"\n{tag}What Keel recorded (`keel traces list`):")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "keel.cli.main",
                "traces",
                "list",
                "--since",
                "10m",
                "--limit",
                "10",
            ],
            env=env,
            check=False,
        )
        _rag_demo(env, tag)
        _prompts_demo(env, tag)
        _evals_demo(env, tag)
        print(
            f"\n{tag}Gateway running at http://127.0.0.1:{PORT}/v1 (database .keel/demo.db). "
            "Try:\n  KEEL_DATABASE_URL=sqlite:///.keel/demo.db .venv/bin/keel traces list\n"
            "Ctrl-C stops it."
        )
        server.wait()
        return server.returncode or 0
    except KeyboardInterrupt:
        return 0
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def _traffic(base_url: str, tag: str) -> None:
    client = OpenAI(base_url=base_url, api_key="not-needed-without-master-key", max_retries=0)
    questions = [
        ("alice", "What is an LLM gateway?"),
        ("bob", "Summarise retrieval-augmented generation in one line."),
        ("alice", "Which model answered me?"),
    ]
    for user, question in questions:
        reply = client.chat.completions.create(
            model="fast",
            messages=[{"role": "user", "content": question}],
            extra_headers={
                "x-keel-user": user,
                "x-keel-session": f"demo-{user}",
                "x-keel-tags": "demo",
            },
        )
        print(f"{tag}fast  <- {user}: {question}\n{tag}      -> {reply.choices[0].message.content}")
    stream = client.chat.completions.create(
        model="smart",
        messages=[{"role": "user", "content": "Stream me a short answer."}],
        stream=True,
        extra_headers={"x-keel-user": "carol"},
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    print(f"{tag}smart <- carol (streamed, Anthropic dialect)\n{tag}      -> {text}")


def _simulated_config(source: Path, fake_url: str) -> Path:
    doc: dict[str, Any] = yaml.safe_load(source.read_text())
    for alias in doc["models"].values():
        for deployment in alias["deployments"]:
            openai_dialect = deployment["provider"] == "openai"
            deployment["api_base"] = f"{fake_url}/v1" if openai_dialect else fake_url
    target = WORK / "demo-simulated.yaml"
    target.write_text(
        "# SIMULATED: examples/keel.yaml with every upstream on the fake provider\n"
        + yaml.safe_dump(doc, sort_keys=False)
    )
    return target


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, cwd=ROOT)


def _wait(url: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode}; see above")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within 30 s")


def _rag_demo(env: dict[str, str], tag: str) -> None:
    """Run examples/rag_app.py (SDK-traced, calling the gateway) and print its trace tree."""
    print(f"\n{tag}A RAG pipeline traced with the keel SDK (examples/rag_app.py):")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "rag_app.py")],
        env={**env, "KEEL_HOST": f"http://127.0.0.1:{PORT}"},
        capture_output=True,
        text=True,
        check=False,
    )
    print(done.stdout.rstrip() or done.stderr.rstrip())
    trace = next(
        (line.split()[-1] for line in done.stdout.splitlines() if line.startswith("trace:")), None
    )
    if trace is None:
        return
    _wait_recorded(f"http://127.0.0.1:{PORT}/health")
    print(f"\n{tag}`keel traces tree {trace}`:")
    tree = [sys.executable, "-m", "keel.cli.main", "traces", "tree", trace]
    subprocess.run(tree, env=env, check=False)


def _prompts_demo(env: dict[str, str], tag: str) -> None:
    """Push examples/prompts, label rag_qa production, call the gateway by the prompt's name."""
    print(f"\n{tag}Prompts from git (examples/prompts) through the registry:")
    keel = [sys.executable, "-m", "keel.cli.main", "prompts"]
    env = {**env, "KEEL_URL": f"http://127.0.0.1:{PORT}"}
    for step in (
        ["push", str(ROOT / "examples" / "prompts"), "-m", "demo"],
        ["label", "rag_qa", "1", "production"],
    ):
        print(f"$ keel prompts {' '.join(step)}")
        subprocess.run([*keel, *step], env=env, check=False)
    client = OpenAI(base_url=f"http://127.0.0.1:{PORT}/v1", api_key="unused", max_retries=0)
    variables = {"context": "[Source: warranty.md] Two years.", "query": "How long?"}
    reply = client.chat.completions.with_raw_response.create(
        model="fast",
        messages=[],
        extra_body={"prompt": {"name": "rag_qa", "variables": variables}},
        extra_headers={"x-keel-user": "alice"},
    )
    answer = reply.parse().choices[0].message.content
    print(f"{tag}rag_qa@production <- alice: {variables['query']}\n{tag}      -> {answer}")
    print(f"  (trace {reply.headers['x-keel-trace-id']}: the span records keel.prompt.version)")
    print("$ keel prompts history rag_qa")
    subprocess.run([*keel, "history", "rag_qa"], env=env, check=False)


def _evals_demo(env: dict[str, str], tag: str) -> None:
    """Run the example eval suite against production, then again with the example regression."""
    print(f"\n{tag}Evaluation: examples/evals/rag_qa_suite.yaml against the production label:")
    env = {
        **env,
        "KEEL_URL": f"http://127.0.0.1:{PORT}",
        "KEEL_EVAL_CACHE": str(WORK / "eval-cache.sqlite"),
    }
    keel = [sys.executable, "-m", "keel.cli.main", "eval", "run"]
    suite = ROOT / "examples" / "evals" / "rag_qa_suite.yaml"
    print(f"$ keel eval run {suite.relative_to(ROOT)} --baseline production")
    subprocess.run([*keel, str(suite), "--baseline", "production", "--quiet"], env=env, check=False)
    # The example regression, in a scratch copy: the prompt stops passing the context.
    scratch = WORK / "eval-demo"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(ROOT / "examples" / "prompts", scratch / "prompts")
    shutil.copytree(ROOT / "examples" / "evals", scratch / "evals")
    prompt = scratch / "prompts" / "rag_qa.yaml"
    prompt.write_text(
        prompt.read_text().replace("Context:\\n{{ context }}\\n\\nQuestion:", "Question:")
    )
    print(f"\n{tag}The same suite after a change that drops the context from the user message:")
    done = subprocess.run(
        [*keel, str(scratch / "evals" / "rag_qa_suite.yaml"), "--baseline", "production",
         "--quiet", "--markdown", str(WORK / "eval-report.md")],
        env=env, check=False,
    )  # fmt: skip
    print(f"(exit code {done.returncode}: the gate failed, so CI would stop this change; "
          f"Markdown report in {WORK / 'eval-report.md'})")  # fmt: skip


def _wait_recorded(url: str) -> None:
    """Until /health says no span is waiting to be stored (at most 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=1) as answer:
            if json.loads(answer.read())["recording"]["queued"] == 0:
                return
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
