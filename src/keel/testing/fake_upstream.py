"""`FakeUpstream`: one local HTTP server that answers like OpenAI and Anthropic, with faults.

Model providers cannot be reached from test machines, so tests and benchmarks point Keel at
this server instead. It serves both dialects on one port::

    POST /v1/chat/completions   OpenAI chat (JSON, or SSE with "stream": true)
    POST /v1/embeddings         OpenAI embeddings (deterministic unit vectors)
    GET  /v1/models             OpenAI model list
    POST /v1/messages           Anthropic Messages (JSON, or SSE with "stream": true)
    POST /v1/messages/count_tokens

Usage::

    async with FakeUpstream() as fake:                 # in the running event loop
        client = AsyncOpenAI(base_url=fake.url + "/v1", api_key="x")
    with FakeUpstream.in_thread(api_key="sk-test") as fake:   # own thread and loop
        ...

What it answers:

- `fake.default` is a `Behavior`: latency, `reply` text (default ``"Echo: <last user
  text>"``), stream `chunks` and `chunk_delay_s`, a `tool_call` used when the request offers
  `tools`, and cached-token counts for usage.
- `fake.enqueue(*items, path=None)` scripts the next requests: a FIFO consumed one item per
  request (only by requests to `path`, when given), falling back to `fake.default` when empty.
  An item is a `Behavior` (answer this request that way) or a `Fault`: `Fault.delay(s)`,
  `Fault.status(429, retry_after=1)`, `Fault.hang()`, `Fault.reset()`, `Fault.malformed()`,
  `Fault.truncate_stream(after_chunks=2)`, `Fault.slow_stream(chunk_delay_s)`,
  `Fault.stream_error(after_chunks=1)`. Requests rejected for auth do not consume items.
- `api_key=` makes OpenAI routes require `Authorization: Bearer <key>` and Anthropic routes
  `x-api-key: <key>` (401 in the dialect's error shape). Anthropic routes always require an
  `anthropic-version` header (400 without it).

What it records: `fake.requests` (a `RecordedRequest` per request: method, path, headers
with lower-cased names, raw body, parsed JSON, time; the last `record_limit` of them),
`fake.request_count`, `fake.in_flight`, and `fake.cancelled`, the requests whose client went
away while the fake was still waiting or streaming. `fake.reset()` clears records, script
and counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypedDict, Unpack

import orjson

from keel.testing.behavior import Behavior, Fault
from keel.testing.dialect import Dialect, Endpoint
from keel.testing.fake_anthropic import AnthropicDialect
from keel.testing.fake_openai import OpenAIDialect
from keel.testing.http_server import Exchange, HttpServer, header_lines

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-sonnet-4-5")

_JSON_HEADERS = header_lines({"Content-Type": "application/json"})
_SSE_HEADERS = header_lines(
    {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    headers: Mapping[str, str]  # names lower-cased
    body: bytes
    json: Any  # None when the body was not JSON
    at: float  # time.time() on arrival


class FakeOptions(TypedDict, total=False):
    """Keyword arguments of `FakeUpstream`, for `FakeUpstream.in_thread(**options)`."""

    host: str
    port: int
    api_key: str | None
    default: Behavior
    models: Sequence[str]
    record_limit: int


class FakeUpstream:
    """A fake OpenAI + Anthropic server on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        default: Behavior | None = None,
        models: Sequence[str] = DEFAULT_MODELS,
        record_limit: int = 10_000,
    ) -> None:
        self.host = host
        self.api_key = api_key
        self.default = default or Behavior()
        self.request_count = 0
        self.in_flight = 0
        self.cancelled = 0
        self._initial_default = self.default
        self._port = port
        self._lock = threading.Lock()
        self._script: deque[tuple[str | None, Fault]] = deque()
        self._records: deque[RecordedRequest] = deque(maxlen=record_limit)
        self._openai = OpenAIDialect(models)
        dialects: list[Dialect] = [self._openai, AnthropicDialect(models)]
        self._routes = {
            route: (dialect, endpoint)
            for dialect in dialects
            for route, endpoint in dialect.routes().items()
        }
        self._server = HttpServer(self._handle)
        self._stopping = False

    @property
    def port(self) -> int:
        """The bound port (the free one picked at start when constructed with port=0)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL without a path, e.g. ``http://127.0.0.1:41234``; OpenAI's is url + "/v1"."""
        return f"http://{self.host}:{self._port}"

    # -- scripting -------------------------------------------------------------------------

    def enqueue(self, *items: Fault | Behavior, path: str | None = None) -> None:
        """Script the next requests (to `path`, if given), one item per request, in order."""
        faults = [Fault.answer(i) if isinstance(i, Behavior) else i for i in items]
        with self._lock:
            self._script.extend((path, fault) for fault in faults)

    @property
    def pending(self) -> int:
        """Scripted items not yet consumed by a request."""
        return len(self._script)

    def reset(self) -> None:
        """Forget requests, scripted items and counters; restore the constructor's default."""
        with self._lock:
            self._script.clear()
            self._records.clear()
        self.default = self._initial_default
        self.request_count = self.cancelled = 0

    # -- what happened ---------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the recorded requests, oldest first."""
        with self._lock:
            return list(self._records)

    @property
    def last_request(self) -> RecordedRequest:
        """The most recent request; AssertionError when there was none."""
        with self._lock:
            assert self._records, "the fake upstream received no request"
            return self._records[-1]

    # -- running ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on host:port in the running event loop."""
        self._port = await self._server.start(self.host, self._port)

    async def stop(self) -> None:
        """Stop listening and cancel whatever is still being answered."""
        self._stopping = True
        try:
            await self._server.stop()
        finally:
            self._stopping = False

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @classmethod
    @contextlib.contextmanager
    def in_thread(
        cls,
        *,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
        **options: Unpack[FakeOptions],
    ) -> Iterator[FakeUpstream]:
        """Run a fake in its own thread and event loop (`uvloop.new_event_loop` works too)."""
        fake = cls(**options)
        loop = loop_factory()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(fake.start())
            except BaseException as exc:  # reported to the caller's thread below
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(fake.stop())
            loop.close()

        thread = threading.Thread(target=run, name=f"fake-upstream-{id(fake):x}", daemon=True)
        thread.start()
        started.wait()
        if failure:
            raise failure[0]
        try:
            yield fake
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()

    # -- answering -------------------------------------------------------------------------

    def _handle(self, exchange: Exchange) -> Coroutine[Any, Any, None] | None:
        """Answer at once when nothing waits; otherwise return the coroutine that will."""
        self.request_count += 1
        method, path, raw = exchange.method, exchange.path, exchange.body
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            body = None
        record = RecordedRequest(method, path, exchange.headers, raw, body, time.time())
        with self._lock:
            self._records.append(record)
        route = self._routes.get((method, path))
        if route is None:
            exchange.respond(404, self._openai.unknown_route(method, path), _JSON_HEADERS)
            return None
        dialect, endpoint = route
        denied = dialect.auth_error(exchange.headers, self.api_key)
        if denied is not None:
            exchange.respond(denied[0], denied[1], _JSON_HEADERS)
            return None
        if not isinstance(body, dict):
            message = "We could not parse the JSON body of your request."
            exchange.respond(400, dialect.error(400, message, None), _JSON_HEADERS)
            return None
        fault = self._next_fault(path)
        behavior = self.default
        if fault is None and behavior.latency_s <= 0:
            result = endpoint(body, behavior)  # the benchmark's path: no task, no waiting
            if isinstance(result, bytes):
                exchange.respond(200, result, _JSON_HEADERS)
                return None
            if behavior.chunk_delay_s <= 0:
                exchange.stream(200, _SSE_HEADERS, result)
                return None
        return self._answer_later(exchange, fault, dialect, endpoint, body)

    def _next_fault(self, path: str) -> Fault | None:
        if not self._script:
            return None
        with self._lock:
            for index, (scope, fault) in enumerate(self._script):
                if scope is None or scope == path:
                    del self._script[index]
                    return fault
        return None

    async def _answer_later(
        self,
        exchange: Exchange,
        fault: Fault | None,
        dialect: Dialect,
        endpoint: Endpoint,
        body: dict[str, Any],
    ) -> None:
        self.in_flight += 1
        try:
            await _misbehave(exchange, fault or _NO_FAULT, self.default, dialect, endpoint, body)
        except (asyncio.CancelledError, ConnectionResetError):
            if not exchange.dropped and not self._stopping:
                self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1


_NO_FAULT = Fault("delay")


async def _misbehave(
    exchange: Exchange,
    fault: Fault,
    default: Behavior,
    dialect: Dialect,
    endpoint: Endpoint,
    body: dict[str, Any],
) -> None:
    """Answer one request the way `fault` says (a plain delay when there is no fault)."""
    behavior = fault.behavior if fault.behavior is not None else default
    delay = behavior.latency_s + fault.delay_s
    if delay > 0:
        await asyncio.sleep(delay)
    kind = fault.kind
    if kind == "status":
        headers = _JSON_HEADERS
        if fault.retry_after is not None:
            headers += header_lines({"Retry-After": f"{fault.retry_after:g}"})
        error = dialect.error(
            fault.status_code, fault.message, fault.error_type, fault.error_code, fault.error_param
        )
        exchange.respond(fault.status_code, error, headers)
        return
    if kind == "reset":
        exchange.drop(reset=True)
        return
    streaming = body.get("stream") is True
    if kind == "malformed":
        if streaming:
            exchange.stream(200, _SSE_HEADERS, [dialect.malformed(True)])
        else:
            exchange.respond(200, dialect.malformed(False), _JSON_HEADERS)
        return
    result = endpoint(body, behavior)
    if isinstance(result, bytes):
        if kind == "truncate_stream":  # a plain body: send the head and half of it
            exchange.start_body(200, _JSON_HEADERS, len(result))
            exchange.write(result[: len(result) // 2])
            exchange.drop(reset=False)
        else:
            exchange.respond(200, result, _JSON_HEADERS)
        return
    chunk_delay = fault.chunk_delay_s if kind == "slow_stream" else behavior.chunk_delay_s
    if kind in ("truncate_stream", "stream_error"):
        result = result[: fault.after_chunks]
    if kind == "stream_error":
        result.append(dialect.stream_error(fault.message, fault.error_type))
    exchange.start_stream(200, _SSE_HEADERS)
    for index, frame in enumerate(result):
        if chunk_delay > 0 and index:
            await asyncio.sleep(chunk_delay)
        await exchange.send_chunk(frame)
    if kind == "truncate_stream":
        exchange.drop(reset=False)
    else:
        exchange.end_stream()
