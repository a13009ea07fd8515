"""The fake upstream's HTTP/1.1 transport: a lean asyncio + httptools server.

A fake that "answers at once" must cost far less than the gateway measured against it, so
the server answers a request synchronously inside `data_received` when it can (no task,
no framework), and runs a coroutine only when the answer waits or streams. It also does
what a framework would not: drop a connection on purpose (FIN after partial data, or a TCP
reset), and cancel the answering coroutine as soon as the client goes away.

One `Exchange` is one request and its response. Keep-alive and pipelined requests are
answered in order; request bodies may be fixed-length or chunked (httptools decodes them).
"""

from __future__ import annotations

import asyncio
import functools
import socket
import struct
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from http import HTTPStatus
from typing import Any, cast

import httptools

Handler = Callable[["Exchange"], Coroutine[Any, Any, None] | None]

_STATUS_LINES = {s.value: b"HTTP/1.1 %d %b\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}


def header_lines(headers: Mapping[str, str]) -> bytes:
    """Response headers encoded once, as `Exchange` methods take them."""
    return b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items())


def _head(status: int, headers: bytes, framing: bytes, close: bool) -> bytes:
    line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d Status\r\n" % status
    return line + headers + framing + (b"Connection: close\r\n\r\n" if close else b"\r\n")


class Exchange:
    """One request (method, path, lower-cased headers, body) and the means to answer it."""

    __slots__ = (
        "_connection",
        "_done",
        "body",
        "dropped",
        "headers",
        "keep_alive",
        "method",
        "path",
    )

    def __init__(
        self, connection: _Connection, method: str, path: str, headers: dict[str, str]
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = b""
        self.keep_alive = True
        self.dropped = False  # closed on purpose by the fake, not by the client
        self._connection = connection
        self._done = False

    def respond(self, status: int, body: bytes, headers: bytes) -> None:
        """Send a complete response with a Content-Length."""
        framing = b"Content-Length: %d\r\n" % len(body)
        self._connection.write(_head(status, headers, framing, not self.keep_alive) + body)
        self._finish()

    def start_body(self, status: int, headers: bytes, content_length: int) -> None:
        """Send the head of a fixed-length response; the body follows through `write`."""
        framing = b"Content-Length: %d\r\n" % content_length
        self._connection.write(_head(status, headers, framing, not self.keep_alive))

    def write(self, data: bytes) -> None:
        """Send raw bytes (part of a fixed-length body)."""
        self._connection.write(data)

    def start_stream(self, status: int, headers: bytes) -> None:
        """Send the head of a chunked response; chunks follow through `send_chunk`."""
        framing = b"Transfer-Encoding: chunked\r\n"
        self._connection.write(_head(status, headers, framing, not self.keep_alive))

    def stream(self, status: int, headers: bytes, chunks: list[bytes]) -> None:
        """Send a whole chunked response at once (a stream with no delay between chunks)."""
        framing = b"Transfer-Encoding: chunked\r\n"
        parts = [_head(status, headers, framing, not self.keep_alive)]
        parts.extend(b"%x\r\n%b\r\n" % (len(data), data) for data in chunks)
        parts.append(b"0\r\n\r\n")
        self._connection.write(b"".join(parts))
        self._finish()

    async def send_chunk(self, data: bytes) -> None:
        """Send one chunk, waiting while the client reads slower than we write."""
        if self._connection.closed:
            raise ConnectionResetError("the client closed the connection")
        self._connection.write(b"%x\r\n%b\r\n" % (len(data), data))
        await self._connection.drain()

    def end_stream(self) -> None:
        """Send the last chunk; the response is complete."""
        self._connection.write(b"0\r\n\r\n")
        self._finish()

    def drop(self, *, reset: bool) -> None:
        """Close the connection now: FIN after what was written, or a TCP reset (RST)."""
        self.dropped = True
        self._done = True
        self._connection.drop(reset=reset)

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._connection.finished(self)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests and hands them to the handler in order."""

    def __init__(self, server: HttpServer) -> None:
        self.closed = False
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._waiting: deque[Exchange] = deque()
        self._current: Exchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            self.drop(reset=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._server.connections.discard(self)
        if self._task is not None:
            self._task.cancel()
        self._wake_writer()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        if self._headers.get("expect", "").lower() == "100-continue":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        path = self._url.split(b"?", 1)[0].decode("latin-1")
        method = self._parser.get_method().decode("latin-1")
        exchange = Exchange(self, method, path, self._headers)
        exchange.body = b"".join(self._body)
        exchange.keep_alive = bool(self._parser.should_keep_alive())
        self._waiting.append(exchange)
        self._next()

    # -- used by Exchange ------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self.closed:
            self._transport.write(data)

    async def drain(self) -> None:
        if self._writable is not None:
            await self._writable

    def drop(self, *, reset: bool) -> None:
        transport = self._transport
        if transport is None or self.closed:
            return
        self.closed = True
        self._task = None  # a deliberate drop is not a cancellation of the answer
        if reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:  # linger 0 turns close() into a TCP reset
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()

    def finished(self, exchange: Exchange) -> None:
        # The caller (`_next` or `_answered`) moves on to the next pipelined request.
        self._current = None
        if not exchange.keep_alive:
            self.drop(reset=False)

    # -- internals -------------------------------------------------------------------------

    def _next(self) -> None:
        """Answer waiting requests in order, one at a time (HTTP/1.1 pipelining)."""
        while self._waiting and self._current is None and self._task is None and not self.closed:
            exchange = self._current = self._waiting.popleft()
            pending = self._server.handler(exchange)
            if pending is not None:
                self._task = asyncio.get_running_loop().create_task(pending)
                self._task.add_done_callback(functools.partial(self._answered, exchange))
                return
            self._check_complete(exchange)

    def _answered(self, exchange: Exchange, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None
        if not task.cancelled() and (error := task.exception()) is not None:
            context = {"message": "fake upstream handler failed", "exception": error}
            asyncio.get_running_loop().call_exception_handler(context)
        self._check_complete(exchange)
        self._next()

    def _check_complete(self, exchange: Exchange) -> None:
        if not exchange._done:  # the answer ended without a complete response: fail loudly
            exchange.drop(reset=True)
        if self._current is exchange:
            self._current = None

    def _wake_writer(self) -> None:
        if self._writable is not None:
            if not self._writable.done():
                self._writable.set_result(None)
            self._writable = None

    def cancel(self) -> None:
        """Stop answering and close (server shutdown)."""
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None and not self.closed:
            self._transport.close()


class HttpServer:
    """Listens on host:port and calls `handler(exchange)` for every request."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (a free one when `port` is 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening, cancel answers in progress and close every connection."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.cancel()
        await self._server.wait_closed()
        await asyncio.sleep(0)  # let cancelled answers unwind before the loop goes away
        self._server = None
