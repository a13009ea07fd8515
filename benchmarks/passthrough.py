"""A bare pass-through proxy: the floor Keel's gateway is measured against.

The same ASGI server as `keel serve` (uvicorn, uvloop, httptools, one worker, no access
log) and the same upstream client (one pooled aiohttp ClientSession), doing nothing but
reading the request body, POSTing it to the upstream at the same path, reading the whole
answer and returning it with its status and content type. No parsing, no routing, no
recording: whatever Keel costs above this is the price of its own code.

    python benchmarks/passthrough.py --upstream http://127.0.0.1:9100 --port 4100
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_UPSTREAM_HEADERS = {"Content-Type": "application/json"}


class PassThrough:
    """Raw ASGI app forwarding every request to `upstream` + the same path."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=60)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._forward(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # The same pool settings as keel.providers.transport.HttpTransport.
                connector = aiohttp.TCPConnector(
                    limit=1000, ttl_dns_cache=300, enable_cleanup_closed=True
                )
                self._session = aiohttp.ClientSession(
                    connector=connector, auto_decompress=True, skip_auto_headers=("User-Agent",)
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._session is not None:
                    await self._session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self._session is not None
        parts: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        async with self._session.request(
            scope["method"],
            self._upstream + scope["path"],
            data=body,
            headers=_UPSTREAM_HEADERS,
            timeout=self._timeout,
        ) as response:
            payload = await response.read()
            content_type = response.headers.get("Content-Type", "application/json")
            status = response.status
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
    args = parser.parse_args()
    uvicorn.run(
        PassThrough(args.upstream),
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
