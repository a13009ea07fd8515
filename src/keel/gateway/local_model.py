"""`LocalChatModel`: the gateway as a `ChatModel`, for callers inside the Keel process.

Online evaluation judges calls with the same aliases, retries, fallbacks and recording as
any client, without a loop back through HTTP. Each call is recorded like a client's: in the
trace its `TraceLink` names, with the link's tags and metadata.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from keel.core.completions import answer_from_completion
from keel.core.errors import GatewayError, UpstreamError
from keel.core.ids import new_span_id, new_trace_id
from keel.core.pricing import PriceTable
from keel.gateway.call import Call, validate_chat_body
from keel.gateway.pipeline import Gateway
from keel.ports import ModelAnswer, TraceLink


class LocalChatModel:
    """Non-streaming chat completions through an in-process `Gateway`."""

    def __init__(self, gateway: Gateway, prices: PriceTable) -> None:
        self._gateway = gateway
        self._prices = prices

    async def complete(self, body: dict[str, Any], link: TraceLink | None = None) -> ModelAnswer:
        """One completion; UpstreamError when the gateway refuses or every attempt failed."""
        body = {**body, "stream": False}
        try:
            validate_chat_body(body)
        except GatewayError as exc:
            raise UpstreamError("http", exc.message, status=exc.status) from None
        started_at, started = time.time(), time.perf_counter()
        call = Call(
            body=body,
            alias=body["model"],
            trace_id=link.trace_id if link else new_trace_id(),
            span_id=new_span_id(),
            started_at=started_at,
            started_perf=started,
            parent_span_id=link.parent_span_id if link else None,
            tags=list(link.tags) if link else [],
            metadata=dict(link.metadata or {}) if link else {},
        )
        try:
            data = await self._gateway.chat(call)
        except GatewayError as exc:
            raise UpstreamError("http", exc.message, status=exc.status) from None
        return answer_from_completion(
            orjson.loads(data),
            latency_ms=(time.perf_counter() - started) * 1000.0,
            trace_id=call.trace_id,
            prices=self._prices,
            price_names=(call.alias,),
        )
