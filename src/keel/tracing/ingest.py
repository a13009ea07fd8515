"""The one ingestion path for spans from outside the gateway: the SDK and any OTLP exporter.

Decoded OTLP spans are mapped to Keel spans (`keel.tracing.semconv`), priced from the
same price table as gateway calls when they carry a model and usage, and handed to the
same span sink. The result says how many spans were accepted and how many refused, in
the words OTLP's partial success uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from keel.core.pricing import PriceTable
from keel.ports import SpanQueue
from keel.tracing.otlp import Decoded
from keel.tracing.semconv import to_span

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Ingested:
    """How a batch went: spans accepted, spans refused and why (the first reason).

    `busy`: the span queue had no room for the batch, so none of it was taken; the
    sender should retry later (OTLP exporters do, on 503 with Retry-After).
    """

    accepted: int
    rejected: int
    reason: str = ""
    busy: bool = False


class Ingestor:
    """Maps, prices and emits decoded spans."""

    def __init__(self, sink: SpanQueue, prices: PriceTable) -> None:
        self._sink = sink
        self._prices = prices

    def ingest(self, decoded: Decoded) -> Ingested:
        """Emit every span of `decoded` that maps; never raises for one bad span.

        All or nothing on a full queue: a batch is taken whole or not at all, so that a
        retry never stores a span twice.
        """
        if self._sink.room() < len(decoded.spans):
            return Ingested(0, 0, "the span queue is full", busy=True)
        accepted, rejected, reason = 0, decoded.rejected, decoded.reason
        for otlp in decoded.spans:
            try:
                span = to_span(otlp)
                span.price_with(self._prices, span.model)
            except Exception as exc:  # a mapping bug must not lose the rest of the batch
                rejected += 1
                reason = reason or f"span {otlp.span_id}: {type(exc).__name__}: {exc}"
                log.warning("otlp: could not map span %s: %s", otlp.span_id, exc)
                continue
            self._sink.emit(span)
            accepted += 1
        return Ingested(accepted, rejected, reason)
