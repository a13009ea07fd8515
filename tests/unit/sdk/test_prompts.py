"""keel.get_prompt(): resolving against a real local server; cache, fallbacks, rollout, spans."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

import keel
from keel.core.prompts import PromptVersion, content_hash, parse_document, version_to_json
from keel.core.rollout import Target, assign, rollout_salt
from keel.core.templates import RenderError
from keel.sdk.prompts import RETRY_S, PromptClient
from keel.sdk.transport import TransportError, UrllibTransport
from tests.unit.sdk.collector import Collector
from tests.unit.sdk.conftest import Configure

RAG_QA: dict[str, Any] = {
    "name": "rag_qa",
    "type": "chat",
    "messages": [
        {"role": "system", "content": '{% include "safety" %}Answer from the documents.'},
        {
            "role": "user",
            "content": "{{ question }}\n{% for d in documents %}- {{ d }}\n{% endfor %}",
        },
    ],
    "variables": {"question": "string", "documents": {"type": "array", "default": []}},
    "model": {"alias": "fast", "temperature": 0.2, "max_tokens": 400},
}
SAFETY = {"name": "safety", "type": "text", "template": "Be kind. "}


def version(
    document: dict[str, Any], number: int, pins: dict[str, int] | None = None
) -> PromptVersion:
    template = parse_document(document)
    pins = pins or {}
    return PromptVersion(
        template.name, number, template, content_hash(template, pins), pins, created_at=1.0
    )


class PromptServer:
    """`GET /api/prompts/{name}/resolve` on 127.0.0.1 in a daemon thread, answering from `labels`.

    `status` forces an answer (e.g. 503) for every request; `hold`, while cleared,
    keeps requests waiting; `requests` counts them (path and headers).
    """

    def __init__(self) -> None:
        self.versions: dict[tuple[str, int], PromptVersion] = {}
        self.labels: dict[tuple[str, str], list[Target]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.status: int | None = None
        self.hold = threading.Event()
        self.hold.set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                server.hold.wait(10)
                status, body = server.answer(self.path)
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        ).start()

    def add(self, found: PromptVersion) -> None:
        self.versions[(found.name, found.version)] = found

    def answer(self, path: str) -> tuple[int, Any]:
        if self.status is not None:
            return self.status, {"title": "Unavailable", "status": self.status}
        parts = urlsplit(path)
        name = unquote(parts.path.split("/")[3])
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        label = query.get("label")
        if label is not None:
            targets = self.labels.get((name, label))
            missing = f"Prompt {name!r} has no label {label!r}."
        else:
            number = int(query["version"])
            targets = [Target(number)] if (name, number) in self.versions else None
            missing = f"Prompt {name!r} has no version {number}."
        if targets is None:
            return 404, {"title": "Not Found", "status": 404, "detail": missing}
        served = {t.version: self.versions[(name, t.version)] for t in targets}
        return 200, {
            "name": name,
            "label": label,
            "targets": [t.as_dict() for t in targets],
            "versions": {str(n): version_to_json(v) for n, v in served.items()},
            "included": self._included(list(served.values())),
        }

    def _included(self, versions: list[PromptVersion]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while versions:
            found = versions.pop()
            for reference, number in found.pins.items():
                included = self.versions[(reference, number)]
                if included.ref not in out:
                    out[included.ref] = version_to_json(included)
                    versions.append(included)
        return out

    def close(self) -> None:
        self.hold.set()
        self._server.shutdown()
        self._server.server_close()


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[PromptServer]:
    running = PromptServer()
    running.add(version(SAFETY, 3))
    running.add(version(RAG_QA, 7, {"safety": 3}))
    running.labels[("rag_qa", "production")] = [Target(7)]
    yield running
    running.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def prompts(server: PromptServer, clock: Clock) -> PromptClient:
    return PromptClient(server.url, clock=clock)


@pytest.fixture
def down_url() -> str:
    """A URL nothing listens on (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def refreshes_done() -> bool:
    return not any(t.name == "keel-prompt-refresh" for t in threading.enumerate())


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_label_resolves_once_then_comes_from_the_cache(
    prompts: PromptClient, server: PromptServer
) -> None:
    first = prompts.get("rag_qa")
    assert (first.name, first.version, first.label) == ("rag_qa", 7, "production")
    assert first.type == "chat"
    assert first.config == {"alias": "fast", "temperature": 0.2, "max_tokens": 400}
    assert not first.is_fallback and first.template.alias == "fast"

    assert prompts.get("rag_qa") is first
    assert prompts.get("rag_qa", label="production") is first
    assert [path for path, _ in server.requests] == ["/api/prompts/rag_qa/resolve?label=production"]

    by_version = prompts.get("rag_qa", version=7)
    assert (by_version.version, by_version.label) == (7, None)
    assert server.requests[-1][0] == "/api/prompts/rag_qa/resolve?version=7"
    assert len(server.requests) == 2


def test_config_is_a_copy_the_caller_may_change(prompts: PromptClient) -> None:
    prompts.get("rag_qa").config.pop("alias")
    assert prompts.get("rag_qa").config["alias"] == "fast"


def test_an_expired_entry_is_served_at_once_and_refreshed_by_one_background_thread(
    prompts: PromptClient, server: PromptServer, clock: Clock
) -> None:
    assert prompts.get("rag_qa", cache_ttl_s=60).version == 7
    server.add(version({**RAG_QA, "model": {"alias": "smart"}}, 8, {"safety": 3}))
    server.labels[("rag_qa", "production")] = [Target(8)]
    clock.now += 61
    server.hold.clear()  # the refresh waits on the server: callers must not

    started = time.monotonic()
    assert prompts.get("rag_qa", cache_ttl_s=60).version == 7
    assert prompts.get("rag_qa", cache_ttl_s=60).version == 7
    assert time.monotonic() - started < 1.0
    wait_until(lambda: len(server.requests) == 2)

    server.hold.set()
    wait_until(lambda: prompts.get("rag_qa", cache_ttl_s=60).version == 8)
    fresh = prompts.get("rag_qa", cache_ttl_s=60)
    assert fresh.config["alias"] == "smart"
    assert len(server.requests) == 2  # one refresh for all the stale calls


def test_a_failed_refresh_keeps_the_cached_version_and_retries_after_the_ttl(
    prompts: PromptClient, server: PromptServer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    cached = prompts.get("rag_qa", cache_ttl_s=60)
    cached.render(question="compiled now")
    server.status = 503
    clock.now += 61
    with caplog.at_level(logging.WARNING, logger="keel.sdk"):
        assert prompts.get("rag_qa", cache_ttl_s=60) is cached
        wait_until(refreshes_done)
    assert "could not refresh prompt 'rag_qa'" in caplog.text and "HTTP 503" in caplog.text
    assert prompts.get("rag_qa", cache_ttl_s=60) is cached
    assert len(server.requests) == 2  # not asked again before another TTL

    server.status = None
    clock.now += 61
    assert prompts.get("rag_qa", cache_ttl_s=60) is cached
    wait_until(refreshes_done)
    assert len(server.requests) == 3
    clock.now += 30
    # refreshed (fresh again), and the same version kept as the same, compiled, Prompt
    assert prompts.get("rag_qa", cache_ttl_s=60) is cached
    assert len(server.requests) == 3


def test_server_down_with_a_text_fallback_serves_it(down_url: str) -> None:
    prompts = PromptClient(down_url)
    prompt = prompts.get(
        "rag_qa", fallback="Q: {{ question }}\n{% for d in documents %}{{ d }};{% endfor %}"
    )
    assert prompt.is_fallback and prompt.version is None
    assert (prompt.name, prompt.label, prompt.type, prompt.config) == (
        "rag_qa",
        "production",
        "text",
        {},
    )
    # variables inferred from the template take any JSON value
    assert prompt.render(question="Why?", documents=["a", "b"]) == "Q: Why?\na;b;"
    with pytest.raises(RenderError) as missing:
        prompt.render(documents=[])
    assert missing.value.variable == "question"


def test_server_down_with_a_chat_or_document_fallback_serves_it(down_url: str) -> None:
    prompts = PromptClient(down_url)
    chat = prompts.get(
        "rag_qa",
        fallback=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "{{ question }}"},
        ],
    )
    assert chat.type == "chat" and chat.is_fallback
    assert chat.render(question="Why?") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why?"},
    ]

    document = prompts.get("other", fallback={**RAG_QA, "messages": RAG_QA["messages"][1:]})
    assert document.is_fallback and document.config["alias"] == "fast"
    assert document.render(question="Q?", documents=["d"]) == [
        {"role": "user", "content": "Q?\n- d\n"}
    ]


def test_server_down_without_a_fallback_raises_prompt_unavailable(down_url: str) -> None:
    with pytest.raises(keel.PromptUnavailable) as raised:
        PromptClient(down_url).get("rag_qa")
    message = str(raised.value)
    assert down_url in message and "could not be reached" in message and "fallback=" in message


def test_after_a_failed_fetch_calls_fail_over_at_once_and_one_retry_recovers(
    prompts: PromptClient, server: PromptServer, clock: Clock
) -> None:
    server.status = 502
    assert prompts.get("rag_qa", fallback="Hi {{ name }}").is_fallback
    with pytest.raises(keel.PromptUnavailable, match="HTTP 502"):
        prompts.get("rag_qa")
    assert prompts.get("rag_qa", fallback="Hi {{ name }}").is_fallback
    assert len(server.requests) == 1  # no waiting on the server again within RETRY_S

    server.status = None
    clock.now += RETRY_S
    assert prompts.get("rag_qa", fallback="Hi {{ name }}").is_fallback  # served at once
    wait_until(lambda: not prompts.get("rag_qa", fallback="Hi {{ name }}").is_fallback)
    assert prompts.get("rag_qa").version == 7
    assert len(server.requests) == 2


def test_not_found_raises_prompt_not_found_even_with_a_fallback(
    prompts: PromptClient, server: PromptServer
) -> None:
    with pytest.raises(keel.PromptNotFound) as raised:
        prompts.get("rag_qa", label="staging", fallback="Hi")
    assert raised.value.detail == "Prompt 'rag_qa' has no label 'staging'."
    assert "staging" in str(raised.value) and server.url in str(raised.value)
    with pytest.raises(keel.PromptNotFound, match="no version 99"):
        prompts.get("rag_qa", version=99)


def test_label_and_version_together_or_a_bad_version_are_refused(prompts: PromptClient) -> None:
    with pytest.raises(ValueError, match="not both"):
        prompts.get("rag_qa", label="production", version=7)
    with pytest.raises(ValueError, match="positive integer"):
        prompts.get("rag_qa", version=0)


def test_a_rollout_is_sticky_per_unit_follows_the_weights_and_agrees_with_the_gateway(
    prompts: PromptClient, server: PromptServer
) -> None:
    server.add(version(RAG_QA, 8, {"safety": 3}))
    targets = [Target(8, 10.0), Target(7, 90.0)]
    server.labels[("rag_qa", "production")] = targets
    salt = rollout_salt("rag_qa", "production", targets)

    served = {}
    for i in range(2000):
        unit = f"user:u-{i}"
        served[unit] = prompts.get("rag_qa", unit=unit).version
        assert served[unit] == assign(targets, salt, unit)
    assert all(prompts.get("rag_qa", unit=unit).version == v for unit, v in served.items())
    share = sum(v == 8 for v in served.values()) / len(served)
    assert 0.07 < share < 0.13
    assert len(server.requests) == 1


def test_the_current_traces_user_then_session_is_the_rollout_unit(
    sdk: keel.sdk.Client, prompts: PromptClient, server: PromptServer
) -> None:
    server.add(version(RAG_QA, 8, {"safety": 3}))
    targets = [Target(8, 50.0), Target(7, 50.0)]
    server.labels[("rag_qa", "production")] = targets
    salt = rollout_salt("rag_qa", "production", targets)

    for i in range(20):
        with keel.span("request"):
            keel.update_current_trace(user_id=f"u-{i}", session_id="s-1")
            expected = assign(targets, salt, f"user:u-{i}")
            assert all(prompts.get("rag_qa").version == expected for _ in range(5))
        with keel.span("request"):
            keel.update_current_trace(session_id=f"s-{i}")
            expected = assign(targets, salt, f"session:s-{i}")
            assert all(prompts.get("rag_qa").version == expected for _ in range(5))
    # without a unit each call is its own: both versions show up
    assert {prompts.get("rag_qa").version for _ in range(200)} == {7, 8}


def test_render_fills_chat_and_text_prompts_and_includes_through_the_pins(
    prompts: PromptClient, server: PromptServer
) -> None:
    # a newer safety in production: rag_qa@7 still includes the safety@3 it is pinned to
    server.add(version({**SAFETY, "template": "Be rude. "}, 6))
    server.labels[("safety", "production")] = [Target(6)]

    chat = prompts.get("rag_qa")
    assert chat.render(question="Why?", documents=["a", "b"]) == [
        {"role": "system", "content": "Be kind. Answer from the documents."},
        {"role": "user", "content": "Why?\n- a\n- b\n"},
    ]
    assert chat.render(question="Again?")[1] == {"role": "user", "content": "Again?\n"}
    assert prompts.get("safety").render() == "Be rude. "

    with pytest.raises(RenderError) as wrong:
        chat.render(question=3)
    assert wrong.value.variable == "question"
    with pytest.raises(RenderError, match="did you mean 'question'"):
        chat.render(questoin="Why?")


def test_the_prompt_is_recorded_on_the_spans_that_get_and_render_it(
    sdk: keel.sdk.Client, collector: Collector, prompts: PromptClient, down_url: str
) -> None:
    with keel.span("answer"):
        prompt = prompts.get("rag_qa")
        with keel.span("generate", kind="generation"):
            prompt.render(question="Why?")
    with keel.span("degraded"):
        PromptClient(down_url).get("rag_qa", fallback="Hi")
    prompt.render(question="outside any span")  # nothing to record on, no error
    assert keel.flush(5)

    for name in ("answer", "generate"):
        attributes = collector.span(name).attributes
        assert attributes["keel.prompt.name"] == "rag_qa"
        assert attributes["keel.prompt.version"] == 7
        assert attributes["keel.prompt.label"] == "production"
    degraded = collector.span("degraded").attributes
    assert degraded["keel.prompt.fallback"] is True and "keel.prompt.version" not in degraded


def test_keel_get_prompt_follows_the_sdk_settings(
    configure: Configure, server: PromptServer
) -> None:
    configure(host=server.url, api_key="keel-secret")
    prompt = keel.get_prompt("rag_qa", version=7)
    assert prompt.version == 7 and keel.get_prompt("rag_qa", version=7) is prompt
    (path, headers), *_ = server.requests
    assert path == "/api/prompts/rag_qa/resolve?version=7"
    assert headers["authorization"] == "Bearer keel-secret"
    assert headers["user-agent"].startswith("keel-sdk/")


def test_urllib_transport_get_returns_error_statuses_and_raises_without_an_answer(
    server: PromptServer, down_url: str
) -> None:
    status, body = UrllibTransport().get(f"{server.url}/api/prompts/nope/resolve?label=x", {}, 5)
    assert status == 404 and json.loads(body)["detail"] == "Prompt 'nope' has no label 'x'."
    with pytest.raises(TransportError):
        UrllibTransport().get(f"{down_url}/api/prompts/x/resolve?label=x", {}, 5)
