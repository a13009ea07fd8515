"""The one narrow boundary for upstream HTTP: a pooled aiohttp client.

Every provider sends through `HttpTransport`; network failures come out as
`UpstreamError` values with a kind the gateway can act on (timeout,
connection), so no provider handles aiohttp exceptions itself.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from keel.core.errors import UpstreamError
from keel.core.retry import parse_retry_after


@dataclass(slots=True)
class UpstreamReply:
    """A complete upstream answer."""

    status: int
    body: bytes
    retry_after_s: float | None


class UpstreamStream:
    """An open upstream response whose body is read line by line."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status

    async def read_error(self) -> UpstreamReply:
        """Read the whole (error) body and release the connection."""
        try:
            body = await self._response.read()
        except (TimeoutError, aiohttp.ClientError):
            body = b""
        finally:
            self._response.release()
        retry_after = parse_retry_after(self._response.headers.get("retry-after"), time.time())
        return UpstreamReply(self.status, body, retry_after)

    async def line_batches(self) -> AsyncIterator[list[bytes]]:
        """The body's lines (endings removed), as many as each network read completed.

        Batches instead of single lines so that a burst of stream chunks is
        parsed and relayed as one write to the client, not one per chunk.
        Network failures become UpstreamError.
        """
        content = self._response.content
        pending = b""
        try:
            while True:
                data = await content.readany()
                if not data:
                    if pending:
                        yield [pending.rstrip(b"\r")]
                    return
                if b"\n" not in data:
                    pending += data
                    continue
                lines = (pending + data).split(b"\n")
                pending = lines.pop()
                yield [line[:-1] if line[-1:] == b"\r" else line for line in lines]
        except TimeoutError as exc:
            raise UpstreamError("timeout", "upstream stopped sending mid-stream") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError("connection", f"stream broken: {_describe(exc)}") from exc

    def close(self) -> None:
        """Drop the connection (used when the client went away or the stream is done)."""
        self._response.close()


class HttpTransport:
    """One pooled aiohttp session shared by every provider of a gateway."""

    def __init__(self, *, max_connections: int = 1000) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout]] = {}

    async def start(self) -> None:
        """Open the pool; call from inside the running event loop."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, ttl_dns_cache=300, enable_cleanup_closed=True
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, skip_auto_headers=("User-Agent",)
            )

    async def close(self) -> None:
        """Close every pooled connection."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HttpTransport.start() was not called")
        return self._session

    def _timeout(self, seconds: float, stream: bool) -> aiohttp.ClientTimeout:
        pair = self._timeouts.get(seconds)
        if pair is None:
            # Non-streaming: the whole call is bounded. Streaming: connect and
            # each gap between reads are bounded, a long stream is not.
            pair = (
                aiohttp.ClientTimeout(total=seconds),
                aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds),
            )
            self._timeouts[seconds] = pair
        return pair[1] if stream else pair[0]

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> UpstreamReply:
        """POST and read the whole answer."""
        try:
            async with self.session.post(
                url, data=body, headers=headers, timeout=self._timeout(timeout_s, False)
            ) as response:
                payload = await response.read()
                retry_after = None
                if response.status >= 400:
                    retry_after = parse_retry_after(
                        response.headers.get("retry-after"), time.time()
                    )
                return UpstreamReply(response.status, payload, retry_after)
        except TimeoutError as exc:
            raise UpstreamError("timeout", f"no answer within {timeout_s:g}s") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError("connection", _describe(exc)) from exc

    async def open_stream(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> UpstreamStream:
        """POST and return once the status line and headers have arrived."""
        try:
            response = await self.session.post(
                url, data=body, headers=headers, timeout=self._timeout(timeout_s, True)
            )
        except TimeoutError as exc:
            raise UpstreamError("timeout", f"no answer within {timeout_s:g}s") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError("connection", _describe(exc)) from exc
        return UpstreamStream(response)


def upstream_object(data: bytes, what: str) -> dict[str, Any]:
    """`data` parsed as a JSON object; UpstreamError "malformed" (retryable) otherwise."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("malformed", f"{what} is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise UpstreamError("malformed", f"{what} is not a JSON object")
    return doc


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."
