"""A bare pass-through proxy: the floor Keel's gateway is measured against.

The same ASGI server as `keel serve` (uvicorn, uvloop, httptools, one worker, no access
log) and the same upstream client (Keel's pooled HTTP/1.1 client, `keel.providers.http1`),
doing nothing but
reading the request body, POSTing it to the upstream at the same path, reading the whole
answer and returning it with its status and content type. No parsing, no routing, no
recording: whatever Keel costs above this is the price of its own code.

`--client aiohttp` forwards through one pooled aiohttp ClientSession instead, the client
Keel used before `keel.providers.http1`; the benchmark runs it for context only.

    python benchmarks/passthrough.py --upstream http://127.0.0.1:9100 --port 4100
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import uvicorn

from keel.providers.http1 import Client, Endpoint

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_UPSTREAM_HEADERS = {"Content-Type": "application/json"}
_TIMEOUT_S = 60.0


class PassThrough:
    """Raw ASGI app forwarding every request to `upstream` + the same path."""

    def __init__(self, upstream: str, *, client: str = "keel") -> None:
        self._upstream = upstream.rstrip("/")
        self._client = Client()
        self._endpoints: dict[str, Endpoint] = {}
        self._aiohttp = client == "aiohttp"
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._forward(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self._aiohttp:  # the pool settings Keel's aiohttp transport had
                    connector = aiohttp.TCPConnector(limit=1000, enable_cleanup_closed=True)
                    self._session = aiohttp.ClientSession(
                        connector=connector, skip_auto_headers=("User-Agent",)
                    )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._client.close()
                if self._session is not None:
                    await self._session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        if self._session is not None:
            await self._forward_aiohttp(scope["path"], body, send)
            return
        path = scope["path"]
        endpoint = self._endpoints.get(path)
        if endpoint is None:
            endpoint = self._client.endpoint(self._upstream + path, _UPSTREAM_HEADERS)
            self._endpoints[path] = endpoint
        response = await self._client.post(endpoint, body, _TIMEOUT_S, streaming=False)
        try:
            payload = await response.read_all()
        finally:
            response.close()
        content_type = response.header("content-type") or "application/json"
        await _answer(send, response.status, content_type, payload)

    async def _forward_aiohttp(self, path: str, body: bytes, send: Send) -> None:
        assert self._session is not None
        async with self._session.post(
            self._upstream + path,
            data=body,
            headers=_UPSTREAM_HEADERS,
            timeout=aiohttp.ClientTimeout(total=_TIMEOUT_S),
        ) as response:
            payload = await response.read()
            content_type = response.headers.get("Content-Type", "application/json")
            await _answer(send, response.status, content_type, payload)


async def _answer(send: Send, status: int, content_type: str, payload: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def main() -> None:
    """Serve the pass-through proxy until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:9100")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4100)
    parser.add_argument("--client", choices=("keel", "aiohttp"), default="keel")
    args = parser.parse_args()
    uvicorn.run(
        PassThrough(args.upstream, client=args.client),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        workers=1,
    )


if __name__ == "__main__":
    main()
