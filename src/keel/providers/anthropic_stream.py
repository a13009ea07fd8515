"""Anthropic SSE events -> OpenAI `chat.completion.chunk` frames: a pure state machine, no I/O.

`SSEParser` turns body lines into (event, data) pairs; `StreamTranslator`
turns each event into the OpenAI frames it stands for while assembling the
answer and usage. Per event it parses one small JSON document and serialises
one small choice: the chunk envelope (id, created, model) is encoded once per
stream and reused as bytes, because this runs for every token on the gateway's
hot path.
"""

from __future__ import annotations

from typing import Any

import orjson

from keel.core.errors import UpstreamError
from keel.core.usage import Usage
from keel.providers.anthropic_response import (
    assistant_message,
    error_from_event,
    finish_reason,
    openai_usage,
)
from keel.providers.transport import upstream_object

DONE = b"data: [DONE]\n\n"
_NOTHING: tuple[bytes, ...] = ()
_TAIL = b"]}\n\n"
_TEXT_HEAD = b'{"index":0,"delta":{"content":'
_TEXT_TAIL = b'},"finish_reason":null}'
_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


class SSEParser:
    """Server-sent events from lines: `event:` and `data:` fields, dispatched at a blank line."""

    __slots__ = ("_data", "_event")

    def __init__(self) -> None:
        self._event = ""
        self._data: list[bytes] = []

    def feed(self, line: bytes) -> tuple[str, bytes] | None:
        """Take one line (with or without its ending); an event when the line completes one."""
        line = line.rstrip(b"\r\n")
        if not line:
            return self.flush()
        if line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value[:1] == b" " else value)
        elif line.startswith(b"event:"):
            self._event = line[6:].strip().decode("utf-8", "replace")
        return None  # comments (`:`), `id:`, `retry:`

    def flush(self) -> tuple[str, bytes] | None:
        """The pending event, if any (at a blank line, or when the body ends without one)."""
        if not self._data:
            self._event = ""
            return None
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        event = (self._event, data)
        self._event = ""
        self._data = []
        return event


class StreamTranslator:
    """One Anthropic stream, event by event, into OpenAI chunk frames.

    `finished` turns True at `message_stop`, whose frames end with [DONE];
    `saw_token` at the first content or tool-call delta. `usage()` and
    `output()` give what has been assembled so far, also after a failure.
    """

    def __init__(
        self, model: str, *, created: int, include_usage: bool, json_tool: str | None = None
    ) -> None:
        self.model = model
        self.finished = False
        self.saw_token = False
        self._created = created
        self._include_usage = include_usage
        self._json_tool = json_tool
        self._head = self._envelope("")
        self._raw_usage: dict[str, int] = {}
        self._texts: list[str] = []
        self._calls: list[dict[str, Any]] = []
        self._arguments: list[list[str]] = []
        # Anthropic block index -> tool-call index (>= 0), -1 for text, -2 for skipped blocks.
        self._blocks: dict[int, int] = {}
        self._finish: str | None = None

    def feed(self, event: str, data: bytes) -> tuple[bytes, ...]:
        """The frames one event stands for; raises UpstreamError for an error event."""
        doc = upstream_object(data, "stream event")
        kind = doc.get("type") or event
        if kind == "content_block_delta":
            return self._block_delta(doc)
        if kind == "content_block_start":
            return self._block_start(doc)
        if kind == "message_start":
            return self._message_start(doc)
        if kind == "message_delta":
            return self._message_delta(doc)
        if kind == "message_stop":
            self.finished = True
            if self._include_usage:
                usage = self.usage() or Usage()
                frame = self._head + b'],"usage":' + orjson.dumps(openai_usage(usage)) + b"}\n\n"
                return frame, DONE
            return (DONE,)
        if kind == "error":
            raise error_from_event(doc)
        return _NOTHING  # ping, content_block_stop, events added after this was written

    def usage(self) -> Usage | None:
        """Usage reported so far (message_start, then the cumulative message_delta counts)."""
        raw = self._raw_usage
        if not raw:
            return None
        read = raw.get("cache_read_input_tokens", 0)
        write = raw.get("cache_creation_input_tokens", 0)
        return Usage(
            input_tokens=raw.get("input_tokens", 0) + read + write,
            output_tokens=raw.get("output_tokens", 0),
            cache_read_tokens=read,
            cache_write_tokens=write,
        )

    def output(self) -> dict[str, Any]:
        """The assembled answer in the shape of a response's `choices`."""
        calls = [
            {**call, "function": {**call["function"], "arguments": "".join(parts)}}
            for call, parts in zip(self._calls, self._arguments, strict=True)
        ]
        message = assistant_message("".join(self._texts), calls)
        return {"choices": [{"index": 0, "message": message, "finish_reason": self._finish}]}

    def _envelope(self, message_id: str) -> bytes:
        return (
            b'data: {"id":'
            + orjson.dumps(message_id)
            + b',"object":"chat.completion.chunk","created":'
            + str(self._created).encode()
            + b',"model":'
            + orjson.dumps(self.model)
            + b',"choices":['
        )

    def _frame(self, choice: dict[str, Any]) -> bytes:
        return self._head + orjson.dumps(choice) + _TAIL

    def _text(self, text: str) -> tuple[bytes, ...]:
        if not text:
            return _NOTHING
        self._texts.append(text)
        self.saw_token = True
        return (b"".join((self._head, _TEXT_HEAD, orjson.dumps(text), _TEXT_TAIL, _TAIL)),)

    def _message_start(self, doc: dict[str, Any]) -> tuple[bytes, ...]:
        message = doc.get("message")
        if not isinstance(message, dict):
            raise UpstreamError("malformed", "message_start event without a message")
        model = message.get("model")
        if isinstance(model, str) and model:
            self.model = model
        message_id = message.get("id")
        self._head = self._envelope(message_id if isinstance(message_id, str) else "")
        self._absorb_usage(message.get("usage"))
        delta = {"role": "assistant", "content": ""}
        return (self._frame({"index": 0, "delta": delta, "finish_reason": None}),)

    def _block_start(self, doc: dict[str, Any]) -> tuple[bytes, ...]:
        index = doc.get("index")
        block = doc.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            raise UpstreamError("malformed", "content_block_start without index or block")
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = -1
            return self._text(block.get("text") or "")
        if kind != "tool_use":
            self._blocks[index] = -2  # thinking, server tools: no OpenAI counterpart
            return _NOTHING
        if block.get("name") == self._json_tool:
            self._blocks[index] = -1  # the forced JSON tool's input is the answer text
            return _NOTHING
        position = len(self._calls)
        self._blocks[index] = position
        call = {
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }
        self._calls.append(call)
        self._arguments.append([])
        self.saw_token = True
        delta = {"tool_calls": [{"index": position, **call}]}
        return (self._frame({"index": 0, "delta": delta, "finish_reason": None}),)

    def _block_delta(self, doc: dict[str, Any]) -> tuple[bytes, ...]:
        delta = doc.get("delta")
        index = doc.get("index")
        target = self._blocks.get(index) if isinstance(index, int) else None
        if not isinstance(delta, dict) or target is None or target == -2:
            return _NOTHING
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            return self._text(text) if isinstance(text, str) else _NOTHING
        if kind != "input_json_delta":
            return _NOTHING  # citations, thinking and signature deltas
        partial = delta.get("partial_json")
        if not isinstance(partial, str) or not partial:
            return _NOTHING  # Anthropic opens each tool input with an empty delta
        if target == -1:
            return self._text(partial)
        self._arguments[target].append(partial)
        self.saw_token = True
        call = {"index": target, "function": {"arguments": partial}}
        return (self._frame({"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}),)

    def _message_delta(self, doc: dict[str, Any]) -> tuple[bytes, ...]:
        self._absorb_usage(doc.get("usage"))
        delta = doc.get("delta")
        stop_reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        if stop_reason is None:
            return _NOTHING
        self._finish = finish_reason(stop_reason, self._json_tool)
        return (self._frame({"index": 0, "delta": {}, "finish_reason": self._finish}),)

    def _absorb_usage(self, raw: Any) -> None:
        if not isinstance(raw, dict):
            return
        # message_delta counts are cumulative; some Anthropic-compatible servers
        # send input tokens only there, so the larger count wins.
        for key in _USAGE_KEYS:
            value = raw.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                self._raw_usage[key] = max(value, self._raw_usage.get(key, 0))
