"""The Anthropic dialect of the fake upstream: the Messages API, its SSE events and errors.

A streamed message is the event sequence `message_start`, then per content block
`content_block_start`, (`ping` after the first), `content_block_delta` (`text_delta` or
`input_json_delta`) and `content_block_stop`, then `message_delta` carrying `stop_reason` and
`usage.output_tokens`, then `message_stop`. Every frame is `event: <type>\\ndata: {...}\\n\\n`.
Errors are `{"type": "error", "error": {"type", "message"}}`, in a body or as an `error` event.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from keel.testing.behavior import Behavior, ToolCall
from keel.testing.conversation import completion_tokens, prompt_tokens, reply_text, split_text
from keel.testing.dialect import Endpoint

# status -> (error type, message) as Anthropic sends them.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low."),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error."),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


class AnthropicDialect:
    """Answers `POST /v1/messages` (and `/v1/messages/count_tokens`) like Anthropic."""

    name = "anthropic"

    def __init__(self, models: Sequence[str]) -> None:
        self._ids = itertools.count(1)
        self._default_model = next((m for m in models if m.startswith("claude")), "claude")

    def routes(self) -> dict[tuple[str, str], Endpoint]:
        """The (method, path) pairs this dialect serves."""
        return {
            ("POST", "/v1/messages"): self.message,
            ("POST", "/v1/messages/count_tokens"): self.count_tokens,
        }

    def auth_error(
        self, headers: Mapping[str, str], api_key: str | None
    ) -> tuple[int, bytes] | None:
        """401 for a wrong `x-api-key` (when one is expected), 400 without `anthropic-version`."""
        if api_key is not None and headers.get("x-api-key") != api_key:
            return 401, self.error(401, None, None)
        if "anthropic-version" not in headers:
            return 400, self.error(400, "anthropic-version: header is required", None)
        return None

    def error(
        self,
        status: int,
        message: str | None,
        error_type: str | None,
        code: str | None = None,
        param: str | None = None,
    ) -> bytes:
        """An error body in Anthropic's shape for `status` (it has no code or param)."""
        default_type, default_message = _ERRORS.get(
            status, ("api_error" if status >= 500 else "invalid_request_error", "Error.")
        )
        error = {"type": error_type or default_type, "message": message or default_message}
        return orjson.dumps({"type": "error", "error": error})

    def stream_error(self, message: str | None, error_type: str | None) -> bytes:
        """The `error` SSE event Anthropic sends when a stream fails midway."""
        return b"event: error\ndata: " + self.error(529, message, error_type) + b"\n\n"

    def malformed(self, streaming: bool) -> bytes:
        """A body (or first SSE event) that is not valid JSON."""
        if streaming:
            return b'event: message_start\ndata: {"type": "message_start", "message": {\n\n'
        return b'{"id": "msg_broken", "type": "message", "content": [{'

    def count_tokens(self, body: dict[str, Any], behavior: Behavior) -> bytes:
        """`POST /v1/messages/count_tokens`: the prompt size the fake would report."""
        return orjson.dumps({"input_tokens": prompt_tokens(body)})

    def message(self, body: dict[str, Any], behavior: Behavior) -> bytes | list[bytes]:
        """`POST /v1/messages`: a JSON message, or the SSE event sequence when streaming."""
        tool = behavior.tool if body.get("tools") else None
        text = tool.arguments if tool else reply_text(body, behavior)
        number = next(self._ids)
        message: dict[str, Any] = {
            "id": f"msg_fake{number:020d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model") or self._default_model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        usage = {
            "input_tokens": prompt_tokens(body),
            "cache_creation_input_tokens": behavior.cache_creation_tokens,
            "cache_read_input_tokens": behavior.cached_tokens,
            "output_tokens": completion_tokens(text),
        }
        tool_id = f"toolu_fake{number:020d}"
        stop_reason = "tool_use" if tool else "end_turn"
        if body.get("stream") is True:
            pieces = split_text(text, behavior.chunks)
            return _events(message, usage, pieces, tool, tool_id, stop_reason)
        if tool:
            block = {"type": "tool_use", "id": tool_id, "name": tool.name}
            block["input"] = orjson.loads(tool.arguments or "{}")
        else:
            block = {"type": "text", "text": text}
        message |= {"content": [block], "stop_reason": stop_reason, "usage": usage}
        return orjson.dumps(message)


def _events(
    message: dict[str, Any],
    usage: dict[str, int],
    pieces: list[str],
    tool: ToolCall | None,
    tool_id: str,
    stop_reason: str,
) -> list[bytes]:
    if tool:
        block: dict[str, Any] = {"type": "tool_use", "id": tool_id, "name": tool.name, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in pieces]
    # message_start reports the prompt side; output so far is the first token.
    start_usage = {**usage, "output_tokens": 1}
    return [
        _event("message_start", {"message": {**message, "usage": start_usage}}),
        _event("content_block_start", {"index": 0, "content_block": block}),
        _event("ping", {}),
        *(_event("content_block_delta", {"index": 0, "delta": delta}) for delta in deltas),
        _event("content_block_stop", {"index": 0}),
        _event(
            "message_delta",
            {
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        ),
        _event("message_stop", {}),
    ]
