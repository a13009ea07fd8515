"""Turns a finished gateway call into a generation span and hands it to the sink.

The span is built after the answer went out: `record` notes the end time and schedules
the rest for the event loop's next turn, so building, pricing and encoding the span is
not part of any request's latency. Cost is computed here from the price snapshot; a
model without a price is recorded as unpriced. When the upstream reported no usage,
tokens are counted locally in a worker thread (never on the event loop) and marked
estimated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from keel.core import tokens
from keel.core.deployments import Deployment
from keel.core.pricing import PriceTable
from keel.core.spans import Attempt, Span
from keel.core.usage import Usage
from keel.gateway.call import Call
from keel.ports import SpanSink

_NOT_PARAMS = frozenset(("messages", "input", "model"))


class Recorder:
    """Builds spans for gateway calls; never blocks the request path."""

    def __init__(self, sink: SpanSink, prices: PriceTable, *, capture_messages: bool) -> None:
        self._sink = sink
        self._prices = prices
        self._capture = capture_messages
        self._pending: set[asyncio.Future[Any]] = set()

    def record(
        self,
        call: Call,
        *,
        kind: str,
        name: str,
        deployment: Deployment | None,
        model: str | None,
        usage: Usage | None,
        output: Any,
        attempts: list[Attempt],
        status_code: int,
        error: str | None = None,
        ttft_ms: float | None = None,
        stream: bool = False,
    ) -> None:
        """Record `call` as ended now; the span is built and emitted on the loop's next turn."""
        asyncio.get_running_loop().call_soon(
            self._emit,
            call, kind, name, deployment, model, usage, output, attempts, status_code, error,
            ttft_ms, stream, time.perf_counter(),
        )  # fmt: skip

    def _emit(
        self,
        call: Call,
        kind: str,
        name: str,
        deployment: Deployment | None,
        model: str | None,
        usage: Usage | None,
        output: Any,
        attempts: list[Attempt],
        status_code: int,
        error: str | None,
        ttft_ms: float | None,
        stream: bool,
        end_perf: float,
    ) -> None:
        span = Span(
            trace_id=call.trace_id,
            span_id=call.span_id,
            parent_span_id=call.parent_span_id,
            name=name,
            kind=kind,
            start_time=call.started_at,
            end_time=call.started_at + (end_perf - call.started_perf),
            status="ok" if error is None else "error",
            status_code=status_code,
            error=error,
            alias=call.alias,
            provider=deployment.provider if deployment else None,
            model=model or (deployment.model if deployment else None),
            deployment=deployment.name if deployment else None,
            ttft_ms=ttft_ms,
            stream=stream,
            user_id=call.user_id,
            session_id=call.session_id,
            tags=call.tags,
            metadata=call.metadata,
            params={k: v for k, v in call.body.items() if k not in _NOT_PARAMS},
            attempts=attempts,
        )
        if call.attributes:
            span.attributes = dict(call.attributes)
        if self._capture:
            span.input = call.body.get("messages", call.body.get("input"))
            span.output = output
        if usage is None and error is None and kind == "generation":
            self._estimate_then_emit(span, call.body.get("messages") or [], output)
            return
        self._price(span, usage)
        self._sink.emit(span)

    def _price(self, span: Span, usage: Usage | None) -> None:
        span.usage = usage
        span.price_with(self._prices, span.model, span.alias)

    def _estimate_then_emit(self, span: Span, messages: list[Any], output: Any) -> None:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, _estimate, messages, output, span.model)
        self._pending.add(future)
        future.add_done_callback(self._finish_estimate(span))

    def _finish_estimate(self, span: Span) -> Callable[[asyncio.Future[Usage]], None]:
        def done(future: asyncio.Future[Usage]) -> None:
            self._pending.discard(future)
            usage = None if future.cancelled() or future.exception() else future.result()
            self._price(span, usage)
            self._sink.emit(span)

        return done

    async def drain(self) -> None:
        """Wait for token counts still running (at shutdown, before the sink closes)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


def _estimate(messages: list[Any], output: Any, model: str | None) -> Usage:
    text = ""
    if isinstance(output, dict | list):
        choices = output.get("choices", []) if isinstance(output, dict) else output
        for choice in choices:
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                text += message.get("content") or ""
                for call in message.get("tool_calls") or []:
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        text += (function.get("name") or "") + (function.get("arguments") or "")
    return Usage(
        input_tokens=tokens.count_messages(messages, model),
        output_tokens=tokens.count_text(text, model),
        estimated=True,
    )
