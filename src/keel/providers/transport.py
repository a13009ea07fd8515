"""The one narrow boundary for upstream HTTP, over Keel's own pooled HTTP/1.1 client.

Every provider sends through `HttpTransport`; network failures come out as
`UpstreamError` values with a kind the gateway can act on (timeout,
connection), so no provider handles socket errors itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from keel.core.errors import UpstreamError
from keel.core.retry import parse_retry_after
from keel.providers.http1 import Client, Endpoint, Response

__all__ = ["Endpoint", "HttpTransport", "UpstreamReply", "UpstreamStream", "upstream_object"]


@dataclass(slots=True)
class UpstreamReply:
    """A complete upstream answer."""

    status: int
    body: bytes
    retry_after_s: float | None


class UpstreamStream:
    """An open upstream response whose body is read line by line."""

    def __init__(self, response: Response) -> None:
        self._response = response
        self.status = response.status

    async def read_error(self) -> UpstreamReply:
        """Read the whole (error) body and release the connection."""
        try:
            body = await self._response.read_all()
        except UpstreamError:
            body = b""
        finally:
            self._response.close()
        return UpstreamReply(self.status, body, _retry_after(self._response))

    async def line_batches(self) -> AsyncIterator[list[bytes]]:
        """The body's lines (endings removed), as many as each network read completed.

        Batches instead of single lines so that a burst of stream chunks is
        parsed and relayed as one write to the client, not one per chunk.
        Network failures and read timeouts are UpstreamError.
        """
        response = self._response
        pending = b""
        while True:
            data = await response.read_some()
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

    def close(self) -> None:
        """Stop reading; an unfinished stream's connection is closed, a finished one reused."""
        self._response.close()


class HttpTransport:
    """One pooled client shared by every provider of a gateway."""

    def __init__(self, *, max_connections: int = 1000) -> None:
        self._client = Client(limit_per_origin=max_connections)

    async def start(self) -> None:
        """Nothing to open ahead: connections are made on first use and then pooled."""

    async def close(self) -> None:
        """Close every pooled connection."""
        self._client.close()
        await asyncio.sleep(0)  # let the transports finish closing inside the loop

    def endpoint(self, url: str, headers: Mapping[str, str]) -> Endpoint:
        """A URL with its fixed headers, encoded once; ValueError if either is malformed."""
        return self._client.endpoint(url, headers)

    async def post(self, endpoint: Endpoint, body: bytes, timeout_s: float) -> UpstreamReply:
        """POST and read the whole answer within `timeout_s`."""
        response = await self._client.post(endpoint, body, timeout_s, streaming=False)
        try:
            payload = await response.read_all()
        finally:
            response.close()
        retry_after = _retry_after(response) if response.status >= 400 else None
        return UpstreamReply(response.status, payload, retry_after)

    async def open_stream(
        self, endpoint: Endpoint, body: bytes, timeout_s: float
    ) -> UpstreamStream:
        """POST and return once the status line and headers have arrived.

        `timeout_s` bounds connecting, the wait for the head and each gap between reads.
        """
        return UpstreamStream(await self._client.post(endpoint, body, timeout_s, streaming=True))


def _retry_after(response: Response) -> float | None:
    return parse_retry_after(response.header("retry-after"), time.time())


def upstream_object(data: bytes, what: str) -> dict[str, Any]:
    """`data` parsed as a JSON object; UpstreamError "malformed" (retryable) otherwise."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("malformed", f"{what} is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise UpstreamError("malformed", f"{what} is not a JSON object")
    return doc
