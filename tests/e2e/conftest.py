"""End-to-end harness: the real ASGI server (uvicorn) on a free port, fake upstreams, a database.

`keel` starts the gateway built from a keel.yaml text against the `fake`
upstream and the parametrised `db_url` (SQLite and PostgreSQL), and gives the
official openai client pointed at it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from keel.bootstrap import Container, build_container
from keel.cli.main import cli
from keel.core.spans import Span
from keel.server.app import create_app
from keel.settings import settings_from_text
from keel.store.engine import create_engine_for
from keel.store.spans import SpanRepository
from keel.testing import FakeUpstream


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningKeel:
    """A gateway serving on `url`, with helpers to read what it recorded."""

    url: str
    container: Container
    server: uvicorn.Server
    thread: threading.Thread
    master_key: str | None = None
    clients: list[openai.OpenAI] = field(default_factory=list)
    engine: Engine | None = None

    def client(self, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("api_key", self.master_key or "unused")
        kwargs.setdefault("max_retries", 0)
        client = openai.OpenAI(base_url=self.url + "/v1", **kwargs)
        self.clients.append(client)
        return client

    def spans(
        self,
        expected: int = 1,
        timeout_s: float = 10.0,
        kinds: tuple[str, ...] = ("generation", "embedding"),
    ) -> list[Span]:
        """Every recorded span of `kinds`, newest first, once at least `expected` were written."""
        if self.engine is None:
            self.engine = create_engine_for(self.container.settings.database_url)
        repository = SpanRepository(self.engine)
        deadline = time.monotonic() + timeout_s
        while True:
            self.container.writer.flush()
            found = repository.list_calls(0, limit=10_000, kinds=kinds)
            if len(found) >= expected or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def span(self, trace_id: str) -> Span:
        """The one span of trace `trace_id`, once it is written (one engine per server)."""
        if self.engine is None:
            self.engine = create_engine_for(self.container.settings.database_url)
        repository = SpanRepository(self.engine)
        for _ in range(500):
            self.container.writer.flush()
            spans = repository.trace(trace_id)
            if spans:
                (span,) = spans
                return span
        raise AssertionError(f"trace {trace_id} was not recorded")

    def trace_spans(self, trace_id: str, expected: int) -> list[Span]:
        """Every span of trace `trace_id`, once at least `expected` of them are written."""
        if self.engine is None:
            self.engine = create_engine_for(self.container.settings.database_url)
        repository = SpanRepository(self.engine)
        spans: list[Span] = []
        for _ in range(500):
            self.container.writer.flush()
            spans = repository.trace(trace_id)
            if len(spans) >= expected:
                return spans
        raise AssertionError(f"trace {trace_id} has {len(spans)} spans, not {expected}")

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
        for client in self.clients:
            client.close()
        self.server.should_exit = True
        self.thread.join(timeout=15)


def start_keel(config: str, db_url: str, env: dict[str, str] | None = None) -> RunningKeel:
    settings = settings_from_text(
        config, {"KEEL_DATABASE_URL": db_url, **(env or {})}, source="test.yaml"
    )
    container = build_container(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(container),
            host="127.0.0.1",
            port=port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            log_level="warning",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, name="keel-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("keel test server did not start")
        time.sleep(0.01)
    return RunningKeel(f"http://127.0.0.1:{port}", container, server, thread, settings.master_key)


def fake_config(fake: FakeUpstream, **extra: str) -> str:
    """A keel.yaml with `fast` (OpenAI dialect) and `claude` (Anthropic) aliases on `fake`."""
    text = f"""
models:
  fast:
    deployments:
      - provider: openai
        model: gpt-4o-mini
        api_base: {fake.url}/v1
        api_key: env:FAKE_KEY
        timeout_s: 2
  claude:
    deployments:
      - provider: anthropic
        model: claude-sonnet-4-5
        api_base: {fake.url}
        api_key: env:FAKE_KEY
  embed:
    deployments:
      - provider: openai
        model: text-embedding-3-small
        api_base: {fake.url}/v1
        api_key: env:FAKE_KEY
retries: {{max_attempts: 3, backoff_s: 0.01, max_backoff_s: 0.5}}
capture: {{messages: true}}
"""
    for key, value in extra.items():
        text += f"{key}: {value}\n"
    return text


@pytest.fixture
def run_cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Invoke `keel ...` in-process on `db_url`, from a directory without a keel.yaml."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    env = {"KEEL_DATABASE_URL": db_url, "KEEL_CONFIG": None, "COLUMNS": "240"}

    def run(*args: str) -> Result:
        return runner.invoke(cli, list(args), env=env, catch_exceptions=False)

    yield run


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.in_thread(api_key="sk-fake") as upstream:
        yield upstream


KeelFactory = Callable[..., RunningKeel]


@pytest.fixture
def keel_factory(db_url: str) -> Iterator[KeelFactory]:
    started: list[RunningKeel] = []

    def start(config: str, env: dict[str, str] | None = None) -> RunningKeel:
        running = start_keel(config, db_url, {"FAKE_KEY": "sk-fake", **(env or {})})
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def keel(keel_factory: KeelFactory, fake: FakeUpstream) -> RunningKeel:
    """The gateway on the fake upstream with the default test config."""
    return keel_factory(fake_config(fake))
