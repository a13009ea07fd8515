"""The ASGI application factory: one dict lookup routes a request; lifespan starts and drains.

The /v1 routes are plain ASGI callables rather than a framework's, because the
gateway is a hot path measured against a bare pass-through proxy.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable

import orjson

from keel.bootstrap import Container, prompt_applier
from keel.core.errors import GatewayError
from keel.server.api_datasets import DatasetRoutes
from keel.server.api_eval_runs import EvalRunRoutes
from keel.server.api_prompts import PromptRoutes
from keel.server.api_router import ApiRouter
from keel.server.api_scores import ScoreRoutes
from keel.server.api_traces import TraceRoutes
from keel.server.asgi import Receive, Scope, Send, send_bytes, send_error
from keel.server.openai_routes import OpenAIRoutes
from keel.server.openapi import openapi_document
from keel.server.otlp_routes import OtlpRoutes

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
log = logging.getLogger("keel.server")


class KeelApp:
    """The whole HTTP surface of `keel serve`."""

    def __init__(self, container: Container) -> None:
        self.container = container
        routes = OpenAIRoutes(
            container.gateway,
            master_key=container.settings.master_key,
            max_body_bytes=container.settings.max_body_bytes,
            prompts=prompt_applier(container),
        )
        otlp = OtlpRoutes(
            container.ingestor, routes, max_body_bytes=container.settings.max_body_bytes
        )
        self.api = ApiRouter(routes.authorized)
        self.api.mount("POST", "/api/scores", ScoreRoutes(container.scores, routes).create)
        TraceRoutes(container.queries).register(self.api)
        PromptRoutes(container.prompts).register(self.api)
        DatasetRoutes(container.datasets, container.trace_selector).register(self.api)
        EvalRunRoutes(container.eval_runs).register(self.api)
        document = openapi_document()
        self.api.get("/api/openapi.json", lambda _request: document)
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/traces"): otlp.traces,
            ("POST", "/v1/chat/completions"): routes.chat_completions,
            ("POST", "/chat/completions"): routes.chat_completions,
            ("POST", "/v1/embeddings"): routes.embeddings,
            ("POST", "/embeddings"): routes.embeddings,
            ("GET", "/v1/models"): routes.models,
            ("GET", "/models"): routes.models,
            ("GET", "/health"): self._health,
        }
        allowed: dict[str, list[str]] = {}
        for method, path in self._routes:
            allowed.setdefault(path, []).append(method)
        self._allow = {path: ", ".join(sorted(m)).encode() for path, m in allowed.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            handler = self._routes.get((scope["method"], scope["path"]))
            if handler is not None:
                await handler(scope, receive, send)
            elif scope["path"].startswith("/api/"):
                await self.api(scope, receive, send)
            elif scope["path"] in self._allow:
                message = f"{scope['method']} is not allowed on {scope['path']}."
                allow = [(b"allow", self._allow[scope["path"]])]
                await send_error(send, GatewayError(405, message), allow)
            else:
                await send_error(
                    send, GatewayError(404, f"No route {scope['path']}.", code="not_found")
                )
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.container.start()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                # Everything built so far lives as long as the process: keep it out of
                # the cyclic collector's full scans, which otherwise show as p99 stalls.
                gc.collect()
                gc.freeze()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.api.close)
                await self.container.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_bytes(
            send,
            200,
            orjson.dumps({"status": "ok", "recording": self.container.writer.stats().as_dict()}),
        )


def create_app(container: Container) -> KeelApp:
    """The ASGI app serving `container`'s gateway."""
    return KeelApp(container)
