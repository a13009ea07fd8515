"""Anthropic Messages answers and errors -> OpenAI chat completions and errors: pure, no I/O.

Owns the answer direction shared by whole responses and streams: stop-reason
mapping, usage (Anthropic's `input_tokens` excludes cached tokens, OpenAI's
`prompt_tokens` and Keel's `Usage.input_tokens` include them), the assembled
assistant message, and Anthropic error bodies rewritten in the OpenAI error
shape so a client sees the dialect it speaks. Thinking, redacted-thinking and
server-tool blocks have no OpenAI counterpart and are left out of the message.
"""

from __future__ import annotations

from typing import Any

import orjson

from keel.core.errors import UpstreamError
from keel.core.usage import Usage

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Statuses Anthropic documents per error type; used for errors that arrive
# inside a 200 stream, where there is no HTTP status to read.
ERROR_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def finish_reason(stop_reason: Any, json_tool: str | None = None) -> str:
    """The OpenAI finish_reason for an Anthropic stop_reason."""
    if stop_reason == "tool_use" and json_tool is not None:
        return "stop"  # the forced JSON tool is the answer, not a call for the client
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def usage_from_anthropic(raw: Any) -> Usage | None:
    """Keel usage from an Anthropic `usage` object; None when absent."""
    if not isinstance(raw, dict):
        return None
    read = _count(raw.get("cache_read_input_tokens"))
    write = _count(raw.get("cache_creation_input_tokens"))
    return Usage(
        input_tokens=_count(raw.get("input_tokens")) + read + write,
        output_tokens=_count(raw.get("output_tokens")),
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


def openai_usage(usage: Usage) -> dict[str, Any]:
    """The OpenAI `usage` object for a Keel usage."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
    }


def assistant_message(text: str, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    """An OpenAI assistant message; content is null when the answer is only tool calls."""
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if tool_calls else "")}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def chat_completion(
    doc: dict[str, Any], *, created: int, model: str, json_tool: str | None = None
) -> tuple[dict[str, Any], Usage | None]:
    """An OpenAI `chat.completion` (and its usage) for an Anthropic message.

    `model` is used when the answer does not name one; raises UpstreamError
    ("malformed") when the answer is not a message.
    """
    content = doc.get("content")
    if doc.get("type") != "message" or not isinstance(content, list):
        raise UpstreamError("malformed", "Anthropic answer is not a message with a content list")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            if block.get("name") == json_tool:
                texts.append(arguments)
            else:
                function = {"name": block.get("name"), "arguments": arguments}
                calls.append({"id": block.get("id"), "type": "function", "function": function})
    usage = usage_from_anthropic(doc.get("usage"))
    answer_model = doc.get("model")
    response: dict[str, Any] = {
        "id": doc.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": answer_model if isinstance(answer_model, str) and answer_model else model,
        "choices": [
            {
                "index": 0,
                "message": assistant_message("".join(texts), calls),
                "finish_reason": finish_reason(doc.get("stop_reason"), json_tool),
            }
        ],
    }
    if usage is not None:
        response["usage"] = openai_usage(usage)
    return response, usage


def openai_error_body(message: str, error_type: str) -> bytes:
    """An OpenAI error document."""
    return orjson.dumps(
        {"error": {"message": message, "type": error_type, "param": None, "code": None}}
    )


def error_from_status(status: int, body: bytes, retry_after_s: float | None) -> UpstreamError:
    """An error status from Anthropic, its body rewritten in the OpenAI error shape."""
    error = _error_object(body)
    if error is None:
        # Not Anthropic's shape (a proxy's HTML page, say): nothing worth relaying.
        return UpstreamError(
            "http",
            f"upstream answered HTTP {status}",
            status=status,
            retry_after_s=retry_after_s,
        )
    message, error_type = error
    return UpstreamError(
        "http",
        message,
        status=status,
        retry_after_s=retry_after_s,
        body=openai_error_body(message, error_type),
    )


def error_from_event(doc: dict[str, Any]) -> UpstreamError:
    """An `error` event inside a stream; the status follows the error type."""
    error = doc.get("error")
    error_type = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    error_type = error_type if isinstance(error_type, str) else "api_error"
    message = message[:500] if isinstance(message, str) else "error event in the stream"
    return UpstreamError(
        "http",
        message,
        status=ERROR_STATUSES.get(error_type, 500),
        body=openai_error_body(message, error_type),
    )


def _error_object(body: bytes) -> tuple[str, str] | None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return None
    message = error.get("message")
    error_type = error.get("type")
    return (
        message[:500] if isinstance(message, str) else str(error)[:500],
        error_type if isinstance(error_type, str) else "api_error",
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
