"""One gateway call: the client's request body and the trace context it runs in."""

from __future__ import annotations

from collections.abc import Callable
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
    attributes: dict[str, Any] | None = None  # extra span attributes (the prompt used)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "stream": (lambda value: isinstance(value, bool), "a boolean"),
    "stream_options": (lambda value: isinstance(value, dict), "an object"),
    **{
        name: (_is_number, "a number")
        for name in ("temperature", "top_p", "frequency_penalty", "presence_penalty")
    },
    **{
        name: (_is_int, "an integer")
        for name in ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs")
    },
}
_TYPED_FIELDS = {name: check for name, (check, _) in _CHECKS.items()}
_TYPE_NAMES = {name: what for name, (_, what) in _CHECKS.items()}


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
    for name, value in body.items():  # in request order: the first bad field is reported
        check = _TYPED_FIELDS.get(name)
        if check is not None and value is not None and not check(value):
            raise GatewayError(400, f"'{name}' must be {_TYPE_NAMES[name]}.", param=name)
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
