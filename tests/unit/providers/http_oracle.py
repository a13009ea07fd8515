"""The oracle for Keel's HTTP/1.1 client, and `RawUpstream`, a server that writes exact bytes.

`via_http1` and `via_aiohttp` send the same POST through `keel.providers.http1.Client` and
through aiohttp, and return what a provider would read from each (`Answer`), so a test can
compare them. `FakeUpstream` answers like a model provider; `RawUpstream` answers like an
unusual or broken HTTP server (compressed, close-delimited, 1xx, garbage, stalls) and counts
what the client did with its connections.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

import aiohttp

from keel.providers.http1 import Client

JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class Answer:
    """What a client made of one response: the parts a provider reads."""

    status: int
    body: bytes
    content_type: str | None
    retry_after: str | None


async def via_http1(
    client: Client,
    url: str,
    body: bytes,
    *,
    timeout_s: float = 5.0,
    streaming: bool = False,
) -> Answer:
    """POST through Keel's client; a stream is read with `read_some` until its end."""
    response = await client.post(
        client.endpoint(url, JSON_HEADERS), body, timeout_s, streaming=streaming
    )
    try:
        if streaming:
            parts = []
            while data := await response.read_some():
                parts.append(data)
            payload = b"".join(parts)
        else:
            payload = await response.read_all()
    finally:
        response.close()
    return Answer(
        response.status, payload, response.header("content-type"), response.header("retry-after")
    )


async def via_aiohttp(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    timeout_s: float = 5.0,
    streaming: bool = False,
    tls: ssl.SSLContext | None = None,
) -> Answer:
    """POST through aiohttp with the timeouts that mean what http1's do."""
    if streaming:  # bounds connecting and each gap between reads, not the whole stream
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
    else:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with session.post(
        url, data=body, headers=JSON_HEADERS, timeout=timeout, ssl=tls or True
    ) as response:
        if streaming:
            payload = b"".join([data async for data in response.content.iter_any()])
        else:
            payload = await response.read()
        headers = response.headers
        return Answer(
            response.status, payload, headers.get("Content-Type"), headers.get("Retry-After")
        )


async def eventually(condition: Callable[[], bool], within_s: float = 2.0) -> None:
    """Wait until `condition()` holds; AssertionError after `within_s`."""
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# -- RawUpstream ---------------------------------------------------------------------------

Reply = Callable[[asyncio.StreamWriter], Awaitable[None]]


def send(data: bytes, *, delay_s: float = 0.0, close: bool = False) -> Reply:
    """A reply that waits `delay_s`, writes `data` as is, then closes the connection if asked.

    A reply that leaves its response unfinished keeps the connection open until the
    client closes it, which the server counts in `closed_by_client`.
    """

    async def reply(writer: asyncio.StreamWriter) -> None:
        if delay_s:
            await asyncio.sleep(delay_s)
        writer.write(data)
        await writer.drain()
        if close:
            writer.close()

    return reply


def response(body: bytes, *, status: bytes = b"200 OK", headers: bytes = b"") -> bytes:
    """A complete HTTP/1.1 response with a Content-Length; `headers` are CRLF-ended lines."""
    return b"HTTP/1.1 %b\r\n%bContent-Length: %d\r\n\r\n%b" % (status, headers, len(body), body)


class RawUpstream:
    """An HTTP/1.1 server on `host` that answers each request with the next scripted reply."""

    def __init__(
        self,
        *replies: Reply,
        default: Reply | None = None,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = 0
        self.accepted = 0  # connections accepted
        self.open = 0  # connections open now
        self.max_open = 0  # the most connections open at once
        self.closed_by_client = 0  # connections the client closed (EOF or reset)
        self.heads: list[bytes] = []  # each request's head, as received
        self._replies = deque(replies)
        self._default = default or send(response(b'{"ok":true}'))
        self._tls = tls
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (``https://`` when serving TLS)."""
        scheme = "https" if self._tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self._tls)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self._converse(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client += 1
        except asyncio.CancelledError:
            pass  # the server is stopping; Python 3.11 logs noise for a cancelled handler
        finally:
            self.open -= 1
            writer.close()
            self._tasks.discard(task)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not writer.is_closing():
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(_content_length(head))
            self.heads.append(head)
            reply = self._replies.popleft() if self._replies else self._default
            await reply(writer)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0
