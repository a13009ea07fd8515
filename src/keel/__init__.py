"""Keel: a self-hosted LLMOps platform (gateway, tracing, prompts, evaluation).

The application-facing SDK is re-exported here: `keel.observe`, `keel.span`,
`keel.score`, `keel.get_prompt`, `keel.configure`, … (see `keel.sdk`).
"""

__version__ = "0.1.0"

from keel.sdk import (
    Prompt,
    PromptNotFound,
    PromptUnavailable,
    async_openai_client,
    configure,
    current_span_id,
    current_trace_id,
    flush,
    get_prompt,
    observe,
    openai_client,
    score,
    shutdown,
    span,
    trace_headers,
    update_current_span,
    update_current_trace,
)

__all__ = [
    "Prompt",
    "PromptNotFound",
    "PromptUnavailable",
    "__version__",
    "async_openai_client",
    "configure",
    "current_span_id",
    "current_trace_id",
    "flush",
    "get_prompt",
    "observe",
    "openai_client",
    "score",
    "shutdown",
    "span",
    "trace_headers",
    "update_current_span",
    "update_current_trace",
]
