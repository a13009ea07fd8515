"""Keel's upstream HTTP/1.1 client: keep-alive connection pools on asyncio + httptools.

Why not aiohttp, which Keel used first: in one run on this machine a bare uvicorn proxy
forwarding through aiohttp's pooled client served ~4,300 req/s at concurrency 50 and added
0.29 ms at concurrency 1; the same proxy through this client served ~13,500 req/s and added
0.11 ms (`benchmarks/gateway.py` measures it against Keel on every run). An upstream call
is one POST with a JSON body to a handful of fixed URLs, so the client only needs what that
takes: pooled keep-alive connections, TLS, fixed-length, chunked and close-delimited
bodies, gzip/deflate, timeouts, flow control for streams. aiohttp stays the test oracle:
`tests/unit/providers/test_http1.py` runs the same exchanges and faults through both.

Failures come out as `UpstreamError` (kind "timeout" or "connection"); nothing else
escapes but cancellation, which closes the connection it interrupted.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import zlib
from collections import deque
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools

from keel.core.errors import UpstreamError

KEEPALIVE_S = 15.0  # an idle pooled connection older than this is closed, not reused
_PAUSE_AT = 256 * 1024  # a stream's unread bytes at which reading from the socket pauses
_ACCEPT_ENCODING = b"Accept-Encoding: gzip, deflate\r\n"


class Endpoint:
    """One upstream URL with fixed headers, encoded once for every request to it."""

    __slots__ = ("_head", "pool", "url")

    def __init__(self, url: str, headers: Mapping[str, str], pool: Pool) -> None:
        self.url = url
        self.pool = pool
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {pool.host_header}"]
        for name, value in headers.items():
            if any(c in name + value for c in "\r\n\0") or not name or ":" in name:
                raise ValueError(f"invalid HTTP header {name!r} for {url}")
            if name.lower() not in ("host", "content-length", "transfer-encoding", "connection"):
                lines.append(f"{name}: {value}")
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1") + _ACCEPT_ENCODING

    def request(self, body: bytes) -> bytes:
        """The request's bytes on the wire."""
        return b"%bContent-Length: %d\r\n\r\n%b" % (self._head, len(body), body)


class Response:
    """One upstream response: status and headers, then the body as it arrives."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_connection",
        "_deadline",
        "_decoder",
        "_done",
        "_gap_s",
        "_head",
        "_loop",
        "_timer",
        "_waiter",
        "complete",
        "error",
        "headers",
        "status",
        "streaming",
        "until_close",
    )

    def __init__(self, connection: _Connection, *, streaming: bool) -> None:
        loop = self._loop = connection.loop
        self._connection: _Connection | None = connection
        self.streaming = streaming
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.until_close = False  # the body ends when the server closes the connection
        self.error: UpstreamError | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._decoder: zlib._Decompress | None = None
        self._head: asyncio.Future[None] = loop.create_future()
        self._done: asyncio.Future[None] | None = None if streaming else loop.create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._gap_s = 0.0

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    async def read_head(self) -> None:
        """Wait for the status line and headers."""
        await self._head

    async def read_all(self) -> bytes:
        """Wait for the whole body and return it (decoded)."""
        if self._done is not None:
            await self._done
        else:
            while not self.complete and self.error is None:
                self._resume()
                await self._wait()
            if self.error is not None:
                raise self.error
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data

    async def read_some(self) -> bytes:
        """What arrived since the last read, waiting for at least one byte; b"" at the end."""
        while not self._chunks:
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            await self._wait()
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._resume()
        return data

    def _resume(self) -> None:
        """Everything buffered was taken: read from the socket again if that was paused."""
        if self._buffered >= _PAUSE_AT and self._connection is not None:
            self._connection.resume()
            if self._gap_s:  # a paused socket is our wait, not the upstream's
                self._deadline = self._loop.time() + self._gap_s
        self._buffered = 0

    def close(self) -> None:
        """Stop reading: an unfinished response's connection is closed, not reused."""
        self._stop_timer()
        if not self.complete and self._connection is not None:
            connection, self._connection = self._connection, None
            connection.abort()

    # -- timeouts --------------------------------------------------------------------------

    def bound_total(self, deadline: float) -> None:
        """Fail with a timeout unless the whole response has arrived by `deadline`."""
        self._deadline = deadline
        self._timer = self._loop.call_at(deadline, self._expire)

    def bound_gaps(self, gap_s: float) -> None:
        """Fail with a timeout when nothing arrives for `gap_s` seconds."""
        self._gap_s = gap_s
        self._deadline = self._loop.time() + gap_s
        self._timer = self._loop.call_at(self._deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self.complete or self.error is not None:
            return
        if self._gap_s:
            paused = self._connection is not None and self._connection.paused
            if paused or self._loop.time() < self._deadline:  # data came, or we hold it back
                self._deadline = max(
                    self._deadline, self._loop.time() + (self._gap_s if paused else 0)
                )
                self._timer = self._loop.call_at(self._deadline, self._expire)
                return
        what = f"nothing for {self._gap_s:g}s" if self._gap_s else "the whole answer not in time"
        self.fail(UpstreamError("timeout", f"upstream sent {what}"))
        if self._connection is not None:
            self._connection.abort()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- fed by the connection -------------------------------------------------------------

    def on_head(self, status: int) -> None:
        self.status = status
        encoding = self.header("content-encoding")
        if encoding is not None and encoding.strip().lower() in ("gzip", "x-gzip", "deflate"):
            # wbits 47: gzip or zlib framing, detected from the header bytes; see on_body
            # for the raw deflate some servers send as "deflate".
            self._decoder = zlib.decompressobj(47)
        if not self._head.done():
            self._head.set_result(None)

    def on_body(self, data: bytes) -> None:
        if self._gap_s:
            self._deadline = self._loop.time() + self._gap_s
        if self.error is not None:
            return
        if self._decoder is not None:
            try:
                data = self._decode(data)
            except zlib.error as exc:
                self.fail(UpstreamError("connection", f"undecodable compressed body: {exc}"))
                return
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
            if self.streaming and self._buffered >= _PAUSE_AT and self._connection is not None:
                self._connection.pause()
            self._wake()

    def _decode(self, data: bytes) -> bytes:
        assert self._decoder is not None
        try:
            return self._decoder.decompress(data)
        except zlib.error:
            fresh = self._decoder.unused_data == b"" and not self._chunks
            if not fresh or self.header("content-encoding") != "deflate":
                raise
            # "deflate" without the zlib header (raw deflate), as aiohttp also accepts.
            self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._decoder.decompress(data)

    def finish(self) -> None:
        if self.error is not None:  # the framing ended, but the body was not readable
            self._connection = None
            return
        if self._decoder is not None:
            rest = self._decoder.flush()
            if rest:
                self._chunks.append(rest)
        self.complete = True
        self._connection = None
        self._stop_timer()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
        self._wake()

    def fail(self, error: UpstreamError) -> None:
        if self.complete or self.error is not None:
            return
        self.error = error
        self._stop_timer()
        for future in (self._head, self._done):
            if future is not None and not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: a failed stream's head is not awaited again
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to an upstream; one response at a time."""

    def __init__(self, pool: Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.closed = False
        self.idle_since = 0.0
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response: Response | None = None
        self.paused = False

    def send(self, data: bytes, *, streaming: bool) -> Response:
        response = self._response = Response(self, streaming=streaming)
        assert self._transport is not None
        self._transport.write(data)
        return response

    def pause(self) -> None:
        if not self.paused and self._transport is not None:
            self.paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self._transport is not None and not self.closed:
            self.paused = False
            self._transport.resume_reading()

    def abort(self) -> None:
        """Close now (an unfinished response, a timeout, a protocol error)."""
        if not self.closed:
            self.closed = True
            self._pool.forget(self)
            if self._transport is not None:
                self._transport.abort()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None:  # bytes nobody asked for: the connection cannot be trusted
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response.fail(UpstreamError("connection", f"invalid HTTP from upstream: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed, self.closed = self.closed, True
        if not was_closed:
            self._pool.forget(self)
        response, self._response = self._response, None
        if response is None or response.complete:
            return
        if response.until_close and response.status:
            response.finish()
        else:
            reason = f": {exc}" if exc else ""
            response.fail(UpstreamError("connection", f"upstream closed the connection{reason}"))

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._response is not None:
            self._response.headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self._response
        if response is None:
            return
        status = self._parser.get_status_code()
        if status < 200:  # 1xx interim answer: the real one follows
            response.headers.clear()
            return
        framed = any(
            key.lower() in (b"content-length", b"transfer-encoding") for key, _ in response.headers
        )
        response.until_close = not framed and status not in (204, 304)
        response.on_head(status)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response.on_body(body)

    def on_message_complete(self) -> None:
        response = self._response
        if response is None or response.status == 0:
            return  # the end of a 1xx interim answer
        self._response = None
        keep_alive = self._parser.should_keep_alive()
        response.finish()
        if keep_alive and not self.closed:
            self.resume()  # a stream that ended while held back must not pool a paused socket
            self._pool.release(self)
        else:
            self.abort()


class Pool:
    """Keep-alive connections to one origin (scheme, host, port), at most `limit` open."""

    def __init__(
        self, scheme: str, host: str, port: int, *, limit: int, tls: ssl.SSLContext | None
    ) -> None:
        self.host = host
        self.port = port
        default_port = 443 if scheme == "https" else 80
        name = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
        self.host_header = name if port == default_port else f"{name}:{port}"
        self._tls = tls if scheme == "https" else None
        self._limit = limit
        self._open = 0
        self._idle: list[_Connection] = []
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._all: set[_Connection] = set()

    async def acquire(self, timeout_s: float) -> _Connection:
        """An idle connection, or a new one (waiting while `limit` are open)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            now = loop.time()
            while self._idle:
                connection = self._idle.pop()
                if not connection.closed and now - connection.idle_since < KEEPALIVE_S:
                    return connection
                connection.abort()
            if self._open < self._limit:
                break
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, max(deadline - now, 0.001))
            except TimeoutError as exc:
                raise UpstreamError("timeout", f"no free connection within {timeout_s:g}s") from exc
        self._open += 1
        try:
            return await self._connect(loop, max(deadline - loop.time(), 0.001))
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    async def _connect(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> _Connection:
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(timeout_s):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self, loop),
                    self.host,
                    self.port,
                    ssl=self._tls,
                    server_hostname=self.host if self._tls else None,
                )
        except TimeoutError as exc:
            message = f"no connection to {where} within {timeout_s:g}s"
            raise UpstreamError("timeout", message) from exc
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError("connection", f"cannot connect to {where}: {exc}") from exc
        self._all.add(protocol)
        return protocol

    def release(self, connection: _Connection) -> None:
        """Take back a connection whose response is complete."""
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.append(connection)
        self._wake_one()

    def forget(self, connection: _Connection) -> None:
        """A connection closed: it no longer counts against the limit."""
        if connection in self._all:
            self._all.discard(connection)
            self._open -= 1
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Close every connection, idle or busy."""
        for connection in list(self._all):
            connection.abort()
        self._idle.clear()


class Client:
    """Pools by origin; every provider of a gateway shares one client."""

    def __init__(self, *, limit_per_origin: int = 1000, tls: ssl.SSLContext | None = None) -> None:
        """`tls`: the context for https origins (default: the system's CA store)."""
        self._limit = limit_per_origin
        self._tls = tls
        self._pools: dict[tuple[str, str, int], Pool] = {}

    def endpoint(self, url: str, headers: Mapping[str, str]) -> Endpoint:
        """A URL and its fixed headers, ready to POST to; errors on a malformed URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port)
        pool = self._pools.get(key)
        if pool is None:
            tls = (self._tls or _tls_context()) if parts.scheme == "https" else None
            pool = Pool(parts.scheme, parts.hostname, port, limit=self._limit, tls=tls)
            self._pools[key] = pool
        return Endpoint(url, headers, pool)

    async def post(
        self, endpoint: Endpoint, body: bytes, timeout_s: float, *, streaming: bool
    ) -> Response:
        """Send a POST; returns once the response's head has arrived.

        Non-streaming: `timeout_s` bounds the whole exchange, connecting included.
        Streaming: it bounds connecting, the wait for the head and each gap between reads.
        A failure is never retried here: a POST is not idempotent, and the gateway's retry
        policy decides (a pooled connection closed by the server is a "connection" error).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        connection = await endpoint.pool.acquire(timeout_s)
        response = connection.send(endpoint.request(body), streaming=streaming)
        if streaming:
            response.bound_gaps(timeout_s)
        else:
            response.bound_total(deadline)
        try:
            await response.read_head()
        except BaseException:
            response.close()
            raise
        return response

    def close(self) -> None:
        """Close every pooled connection."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Built once, on the first https endpoint: loading the CA store takes milliseconds.
    return ssl.create_default_context()
