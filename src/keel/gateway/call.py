"""One gateway call: the client's request body and the trace context it runs in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keel.core.errors import GatewayError


@dataclass(slots=True)
class Call:
    """What the server hands the gateway: a validated body plus who asked and where it belongs.

    `started_at` is wall time (epoch seconds) and `started_perf` the
    `time.perf_counter()` reading at the same moment; durations use the latter.
    """

    body: dict[str, Any]
    alias: str
    trace_id: str
    span_id: str
    started_at: float
    started_perf: float
    parent_span_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


_NUMBER_FIELDS = ("temperature", "top_p", "frequency_penalty", "presence_penalty")
_INT_FIELDS = ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs")


def validate_chat_body(raw: Any) -> dict[str, Any]:
    """Check the fields the gateway relies on; the upstream validates the rest."""
    body = _object(raw)
    _model(body)
    messages = body.get("messages")
    if messages is None:
        raise GatewayError(400, "Missing required parameter: 'messages'.", param="messages")
    if not isinstance(messages, list) or not messages:
        raise GatewayError(400, "'messages' must be a non-empty array.", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise GatewayError(
                400, f"messages[{index}] must be an object.", param=f"messages[{index}]"
            )
        if not isinstance(message.get("role"), str):
            raise GatewayError(
                400,
                f"messages[{index}].role is required and must be a string.",
                param=f"messages[{index}].role",
            )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise GatewayError(400, "'stream' must be a boolean.", param="stream")
    for name in _NUMBER_FIELDS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise GatewayError(400, f"'{name}' must be a number.", param=name)
    for name in _INT_FIELDS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise GatewayError(400, f"'{name}' must be an integer.", param=name)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise GatewayError(400, "'stream_options' must be an object.", param="stream_options")
    return body


def validate_embeddings_body(raw: Any) -> dict[str, Any]:
    """Check `model` and `input` of an embeddings request."""
    body = _object(raw)
    _model(body)
    value = body.get("input")
    if value is None:
        raise GatewayError(400, "Missing required parameter: 'input'.", param="input")
    if not isinstance(value, str | list) or (isinstance(value, list) and not value):
        raise GatewayError(400, "'input' must be a string or a non-empty array.", param="input")
    return body


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise GatewayError(400, "The request body must be a JSON object.")
    return body


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise GatewayError(400, "Missing required parameter: 'model'.", param="model")
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "'model' must be a non-empty string.", param="model")
    return model
