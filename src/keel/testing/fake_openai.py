"""The OpenAI dialect of the fake upstream: chat completions, embeddings, models, errors.

Bodies follow the public wire format: `chat.completion` objects, `chat.completion.chunk`
SSE events (`data: {...}` frames ending with `data: [DONE]`), a usage chunk with
`"choices": []` only when the request asked for `stream_options.include_usage`, embeddings
as floats or little-endian float32 base64 (the official SDK asks for base64 by default), and
errors as `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import math
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from keel.testing.behavior import Behavior, TokenLogprob, ToolCall
from keel.testing.conversation import (
    completion_tokens,
    prompt_tokens,
    reply_text,
    split_text,
    word_count,
)
from keel.testing.dialect import Endpoint

SYSTEM_FINGERPRINT = "fp_keel_fake"
DONE = b"data: [DONE]\n\n"
EMBEDDING_DIMENSIONS = 8

# status -> (type, code, message) as OpenAI sends them.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
}


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


def _usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": min(cached, prompt), "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _logprobs(pieces: Sequence[str], top: int) -> dict[str, Any]:
    content = []
    for i, piece in enumerate(pieces):
        logprob = -0.01 * (1 + i % 7)
        alternatives = [{"token": piece, "logprob": logprob, "bytes": list(piece.encode())}]
        alternatives += [
            {"token": f"{piece}{k}", "logprob": logprob - 2.0 * k, "bytes": None}
            for k in range(1, top)
        ]
        content.append(
            {
                "token": piece,
                "logprob": logprob,
                "bytes": list(piece.encode()),
                "top_logprobs": alternatives[:top],
            }
        )
    return {"content": content, "refusal": None}


def _scripted_logprobs(tokens: Sequence[TokenLogprob], top: int) -> dict[str, Any]:
    content = [
        {
            "token": t.token,
            "logprob": t.logprob,
            "bytes": list(t.token.encode()),
            "top_logprobs": [
                {"token": alt, "logprob": lp, "bytes": list(alt.encode())}
                for alt, lp in t.top[:top]
            ],
        }
        for t in tokens
    ]
    return {"content": content, "refusal": None}


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for `text`: same text and size, same vector."""
    raw = hashlib.shake_256(text.encode()).digest(2 * dimensions)
    values = [v / 32767.5 - 1.0 for v in struct.unpack(f"<{dimensions}H", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _embedding_inputs(raw: Any) -> Iterator[tuple[str, int]]:
    """(text, token count) for each input: a string, strings, token ids, or lists of ids."""
    if isinstance(raw, str):
        yield raw, word_count(raw)
    elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
        yield " ".join(map(str, raw)), len(raw)
    elif isinstance(raw, list):
        for item in raw:
            if isinstance(item, list):
                yield " ".join(map(str, item)), len(item)
            else:
                yield str(item), word_count(str(item))


class OpenAIDialect:
    """Answers `/v1/chat/completions`, `/v1/embeddings` and `/v1/models` like OpenAI."""

    name = "openai"

    def __init__(self, models: Sequence[str]) -> None:
        self._ids = itertools.count(1)
        self._models_body = orjson.dumps(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 1715367049, "owned_by": "openai"}
                    for m in models
                ],
            }
        )

    def routes(self) -> dict[tuple[str, str], Endpoint]:
        """The (method, path) pairs this dialect serves."""
        return {
            ("POST", "/v1/chat/completions"): self.chat_completion,
            ("POST", "/v1/embeddings"): self.embeddings,
            ("GET", "/v1/models"): self.models,
        }

    def auth_error(
        self, headers: Mapping[str, str], api_key: str | None
    ) -> tuple[int, bytes] | None:
        """401 when a key is expected and `Authorization: Bearer <key>` does not carry it."""
        if api_key is None or headers.get("authorization") == f"Bearer {api_key}":
            return None
        return 401, self.error(401, None, None)

    def error(
        self,
        status: int,
        message: str | None,
        error_type: str | None,
        code: str | None = None,
        param: str | None = None,
    ) -> bytes:
        """An error body in OpenAI's shape for `status`."""
        default_type, default_code, default_message = _ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
        )
        return orjson.dumps(
            {
                "error": {
                    "message": message or default_message,
                    "type": error_type or default_type,
                    "param": param,
                    "code": code or default_code,
                }
            }
        )

    def unknown_route(self, method: str, path: str) -> bytes:
        """The 404 body OpenAI sends for a path it does not serve."""
        error = {"message": f"Invalid URL ({method} {path})", "type": "invalid_request_error"}
        return orjson.dumps({"error": {**error, "param": None, "code": None}})

    def stream_error(self, message: str | None, error_type: str | None) -> bytes:
        """The SSE frame OpenAI sends when a stream fails midway."""
        return b"data: " + self.error(500, message, error_type) + b"\n\n"

    def malformed(self, streaming: bool) -> bytes:
        """A body (or first SSE frame) that is not valid JSON."""
        if streaming:
            return b'data: {"id": "chatcmpl-broken", "object": "chat.completion.chunk", \n\n'
        return b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{'

    def models(self, body: dict[str, Any], behavior: Behavior) -> bytes:
        """`GET /v1/models`: the configured model ids."""
        return self._models_body

    def embeddings(self, body: dict[str, Any], behavior: Behavior) -> bytes:
        """`POST /v1/embeddings`: deterministic vectors, floats or base64 float32."""
        dims = body.get("dimensions")
        dimensions = dims if isinstance(dims, int) and dims > 0 else EMBEDDING_DIMENSIONS
        as_base64 = body.get("encoding_format") == "base64"
        data: list[dict[str, Any]] = []
        tokens = 0
        for index, (text, count) in enumerate(_embedding_inputs(body.get("input"))):
            vector = embedding_vector(text, dimensions)
            tokens += count
            encoded: list[float] | str = vector
            if as_base64:
                encoded = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        return orjson.dumps(
            {
                "object": "list",
                "data": data,
                "model": body.get("model") or "text-embedding-3-small",
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def chat_completion(self, body: dict[str, Any], behavior: Behavior) -> bytes | list[bytes]:
        """`POST /v1/chat/completions`: a JSON completion, or SSE frames when streaming."""
        n = body.get("n")
        choices = n if isinstance(n, int) and n > 0 else 1
        tool = behavior.tool if body.get("tools") else None
        text = tool.arguments if tool else reply_text(body, behavior)
        usage = _usage(
            prompt_tokens(body), choices * completion_tokens(text), behavior.cached_tokens
        )
        top: Any = body.get("top_logprobs") if body.get("logprobs") is True else None
        top_logprobs = None if top is None else top if isinstance(top, int) else 0
        number = next(self._ids)
        completion = _Completion(
            head={
                "id": f"chatcmpl-fake{number:020d}",
                "created": int(time.time()),
                "model": body.get("model") or "gpt-4o-mini",
                "service_tier": "default",
                "system_fingerprint": SYSTEM_FINGERPRINT,
            },
            choices=choices,
            text=text,
            chunks=behavior.chunks,
            tool=tool,
            call_id=f"call_fake{number:020d}",
            top_logprobs=top_logprobs,
            usage=usage,
            reports_usage=behavior.reports_usage,
            scripted_logprobs=behavior.logprobs,
        )
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            include_usage = include_usage and behavior.reports_usage
            return completion.sse_frames(include_usage)
        return completion.json()


@dataclass(slots=True)
class _Completion:
    """One chat completion, rendered as a JSON body or as a list of SSE frames."""

    head: dict[str, Any]
    choices: int
    text: str  # the reply, or the tool call's arguments
    chunks: int  # how many parts a stream (and logprobs) cut `text` into
    tool: ToolCall | None
    call_id: str
    top_logprobs: int | None
    usage: dict[str, Any]
    reports_usage: bool = True
    scripted_logprobs: tuple[TokenLogprob, ...] | None = None

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool else "stop"

    def pieces(self) -> list[str]:
        """The answer's tokens: the scripted ones, else `text` cut into `chunks` parts."""
        if self.scripted_logprobs is not None and not self.tool:
            return [t.token for t in self.scripted_logprobs]
        return split_text(self.text, self.chunks)

    def logprobs(self, start: int, stop: int) -> dict[str, Any] | None:
        """The `logprobs` of tokens start..stop (None when the request did not ask)."""
        top = self.top_logprobs
        if top is None:
            return None
        if self.scripted_logprobs is not None and not self.tool:
            return _scripted_logprobs(self.scripted_logprobs[start:stop], top)
        return _logprobs(self.pieces()[start:stop], top)

    def json(self) -> bytes:
        if self.tool:
            call = {"id": self.call_id, "type": "function", "function": _function(self.tool)}
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        else:
            message = {"role": "assistant", "content": self.text}
        message |= {"refusal": None, "annotations": []}
        logprobs = self.logprobs(0, len(self.pieces()))
        choice = {"message": message, "logprobs": logprobs, "finish_reason": self.finish_reason}
        doc = {
            **self.head,
            "object": "chat.completion",
            "choices": [{"index": i, **choice} for i in range(self.choices)],
        }
        if self.reports_usage:
            doc["usage"] = self.usage
        return orjson.dumps(doc)

    def sse_frames(self, include_usage: bool) -> list[bytes]:
        base = {**self.head, "object": "chat.completion.chunk"}
        if include_usage:
            base["usage"] = None

        def chunk(index: int, delta: dict[str, Any], finish: str | None, lp: Any = None) -> bytes:
            choice = {"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}
            return _sse({**base, "choices": [choice]})

        pieces = self.pieces()
        frames: list[bytes] = []
        for i in range(self.choices):
            if self.tool:
                function = {"name": self.tool.name, "arguments": ""}
                call = {"index": 0, "id": self.call_id, "type": "function", "function": function}
                first = {"role": "assistant", "content": None, "tool_calls": [call]}
                frames.append(chunk(i, {**first, "refusal": None}, None))
                for piece in pieces:
                    delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                    frames.append(chunk(i, delta, None))
            else:
                frames.append(chunk(i, {"role": "assistant", "content": "", "refusal": None}, None))
                for n, piece in enumerate(pieces):
                    frames.append(chunk(i, {"content": piece}, None, self.logprobs(n, n + 1)))
            frames.append(chunk(i, {}, self.finish_reason))
        if include_usage:
            frames.append(_sse({**base, "choices": [], "usage": self.usage}))
        frames.append(DONE)
        return frames


def _function(tool: ToolCall) -> dict[str, str]:
    return {"name": tool.name, "arguments": tool.arguments}
