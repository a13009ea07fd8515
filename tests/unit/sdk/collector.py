"""A tiny real Keel server for SDK tests: records what arrives, answers as told.

`POST /v1/traces` bodies are kept as parsed OTLP JSON, `POST /api/scores` bodies
as parsed JSON, `POST /v1/chat/completions` gets a minimal chat.completion (for
the openai client); every request's headers are kept too. `statuses` holds the
answers for the next trace requests (then 200).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "fast",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hello"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


@dataclass
class Received:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]  # lower-cased names
    raw: bytes
    body: Any


@dataclass
class SpanView:
    """One received span with its attributes as a plain dict (values unwrapped)."""

    raw: dict[str, Any]
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.raw["name"])

    @property
    def trace_id(self) -> str:
        return str(self.raw["traceId"])

    @property
    def span_id(self) -> str:
        return str(self.raw["spanId"])

    @property
    def parent(self) -> str | None:
        return self.raw.get("parentSpanId")

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.raw["status"])

    def json(self, key: str) -> Any:
        """An attribute holding JSON text (keel.input, keel.output, keel.metadata), parsed."""
        return json.loads(self.attributes[key])


def unwrap(value: dict[str, Any]) -> Any:
    """An OTLP AnyValue as a Python value."""
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return value["doubleValue"]
    if "boolValue" in value:
        return value["boolValue"]
    return [unwrap(item) for item in value["arrayValue"]["values"]]


class Collector:
    """An HTTP server on 127.0.0.1 (a free port) in a daemon thread."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.statuses: deque[int] = deque()
        self.delay_s = 0.0
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                collector._record(Received(self.path, headers, raw, json.loads(raw or b"null")))
                if collector.delay_s:
                    time.sleep(collector.delay_s)
                status, answer = 200, b"{}"
                if self.path == "/v1/chat/completions":
                    answer = json.dumps(COMPLETION).encode()
                elif self.path == "/v1/traces" and collector.statuses:
                    status = collector.statuses.popleft()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    def _record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def requests(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def trace_requests(self) -> list[Received]:
        return self.requests("/v1/traces")

    def spans(self) -> list[SpanView]:
        """Every span received so far (accepted or not), in arrival order."""
        views = []
        for request in self.trace_requests():
            for resource_spans in request.body["resourceSpans"]:
                for scope_spans in resource_spans["scopeSpans"]:
                    for span in scope_spans["spans"]:
                        attributes = {a["key"]: unwrap(a["value"]) for a in span["attributes"]}
                        views.append(SpanView(span, attributes))
        return views

    def span(self, name: str) -> SpanView:
        """The one received span called `name`."""
        matches = [s for s in self.spans() if s.name == name]
        assert len(matches) == 1, f"{len(matches)} spans named {name!r}"
        return matches[0]

    def scores(self) -> list[Any]:
        return [r.body for r in self.requests("/api/scores")]
