"""The Keel SDK: trace an application's steps, score them, send both to a Keel server.

    import keel

    @keel.observe(kind="retrieval")
    def retrieve(question: str) -> list[str]: ...

    with keel.span("rerank", kind="rerank") as span:
        span.update(output=ranked)

    keel.update_current_trace(user_id="u-1", session_id="s-9", tags=["beta"])
    client = keel.openai_client()  # requests carry the current span's traceparent
    keel.score("thumbs", True, trace_id=trace_id, source="human")
    prompt = keel.get_prompt("rag_qa", fallback="Answer: {{ question }}")  # cached, see sdk.prompts
    text = prompt.render(question="Why?")

Spans are exported in the background (OTLP/HTTP JSON to `{host}/v1/traces`);
the SDK never raises into the application and never makes it wait for the
server, except `get_prompt`: its first call for a prompt waits for the answer,
and it raises what `keel.sdk.prompts` documents. Settings: `keel.configure(...)`
or `KEEL_*` variables, see `keel.sdk.config`. Depends on the standard library
and `keel.core` only.
"""

from keel.sdk.block import SpanBlock, span
from keel.sdk.client import Client, configure, flush, get_client, shutdown, stats
from keel.sdk.config import SdkConfig
from keel.sdk.current import (
    current_span_id,
    current_trace_id,
    update_current_span,
    update_current_trace,
)
from keel.sdk.exporter import ExportStats
from keel.sdk.observe import observe
from keel.sdk.openai_clients import async_openai_client, openai_client
from keel.sdk.prompts import Prompt, PromptNotFound, PromptUnavailable, get_prompt
from keel.sdk.propagation import trace_headers
from keel.sdk.scores import score
from keel.sdk.spans import SPAN_KINDS, LiveSpan

__all__ = [
    "SPAN_KINDS",
    "Client",
    "ExportStats",
    "LiveSpan",
    "Prompt",
    "PromptNotFound",
    "PromptUnavailable",
    "SdkConfig",
    "SpanBlock",
    "async_openai_client",
    "configure",
    "current_span_id",
    "current_trace_id",
    "flush",
    "get_client",
    "get_prompt",
    "observe",
    "openai_client",
    "score",
    "shutdown",
    "span",
    "stats",
    "trace_headers",
    "update_current_span",
    "update_current_trace",
]
