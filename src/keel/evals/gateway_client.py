"""`GatewayChatModel`: eval tasks and judges call models through Keel's gateway over HTTP.

Any OpenAI-compatible `/v1` base URL works (Keel's gateway in use; the fake upstream in
tests). Each call joins the trace given in its `TraceLink` through a W3C `traceparent`
header and carries the link's tags and metadata in `x-keel-tags` / `x-keel-metadata`, so
the gateway records the generation span inside the eval run's trace. Cost is computed from
the reported usage with the packaged price list (None when the model has no price).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from keel.core.completions import answer_from_completion
from keel.core.errors import UpstreamError
from keel.core.ids import format_traceparent, new_span_id
from keel.core.pricing import PriceTable
from keel.ports import ModelAnswer, TraceLink
from keel.providers.http1 import Client


class GatewayChatModel:
    """Chat completions over HTTP from one OpenAI-compatible base URL (pooled keep-alive)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        prices: PriceTable | None = None,
        timeout_s: float = 120.0,
        max_connections: int = 256,
    ) -> None:
        """`base_url` ends in `/v1` (e.g. `http://127.0.0.1:4000/v1`)."""
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._client = Client(limit_per_origin=max_connections)
        self._prices = prices
        self._timeout_s = timeout_s
        self._plain = self._client.endpoint(self._url, self._headers)

    async def complete(self, body: dict[str, Any], link: TraceLink | None = None) -> ModelAnswer:
        """One non-streaming completion; UpstreamError when the gateway answers an error."""
        endpoint = (
            self._plain
            if link is None
            else self._client.endpoint(self._url, _linked(self._headers, link))
        )
        started = time.perf_counter()
        response = await self._client.post(
            endpoint, orjson.dumps({**body, "stream": False}), self._timeout_s, streaming=False
        )
        try:
            data = await response.read_all()
        finally:
            response.close()
        latency_ms = (time.perf_counter() - started) * 1000.0
        if response.status != 200:
            raise UpstreamError(
                "http", _error_message(response.status, data), status=response.status, body=data
            )
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("malformed", f"the gateway's answer is not JSON: {exc}") from exc
        return answer_from_completion(
            doc,
            latency_ms=latency_ms,
            trace_id=response.header("x-keel-trace-id"),
            prices=self._prices,
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()


def _linked(headers: dict[str, str], link: TraceLink) -> dict[str, str]:
    linked = dict(headers)
    linked["traceparent"] = format_traceparent(link.trace_id, link.parent_span_id or new_span_id())
    if link.tags:
        linked["x-keel-tags"] = ",".join(link.tags)
    if link.metadata:
        linked["x-keel-metadata"] = orjson.dumps(link.metadata).decode()
    return linked


def _error_message(status: int, data: bytes) -> str:
    try:
        doc = orjson.loads(data)
        message = doc["error"]["message"]
        if isinstance(message, str):
            return f"HTTP {status}: {message}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    return f"HTTP {status}: {data[:200].decode('utf-8', 'replace')}"
