"""OpenAI chat request -> Anthropic Messages request: pure translation, no I/O.

Owns the request direction only (answers are in `anthropic_response`, streams
in `anthropic_stream`). Requests Anthropic cannot serve raise `GatewayError`
(400) naming the field, before anything is sent. Fields with no Anthropic
equivalent that do not change what the client gets back in shape are dropped
silently: seed, frequency_penalty, presence_penalty, logit_bias, logprobs,
top_logprobs, store, metadata, service_tier, reasoning_effort, modalities,
prediction, tools[].function.strict. `temperature` is clamped to Anthropic's
0..1 range.

`response_format`: `json_schema` becomes the forced-tool technique Anthropic
documents for JSON output (one tool whose `input_schema` is the schema,
`tool_choice` naming it); the answer side turns that tool call back into the
message text. With client tools present, or a schema whose root is not an
object, and for `json_object`, an instruction is appended to the system prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from keel.core.errors import GatewayError

DEFAULT_MAX_TOKENS = 4096
JSON_TOOL_NAME = "json_response"
_JSON_TOOL_DESCRIPTION = (
    "Give your final answer by calling this tool; its input is the answer, "
    "a JSON document that must match the input schema."
)
_JSON_OBJECT_INSTRUCTION = (
    "Answer with one valid JSON object and nothing else: no prose, no Markdown code fences."
)
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True, slots=True)
class AnthropicRequest:
    """A translated request.

    `json_tool` names the synthetic tool carrying a `json_schema` answer (None
    when the forced-tool technique is not in use); `include_usage` is whether
    the client asked for the final usage chunk of a stream.
    """

    payload: dict[str, Any]
    json_tool: str | None
    include_usage: bool


def to_anthropic_request(body: dict[str, Any], model: str, *, stream: bool) -> AnthropicRequest:
    """Translate an OpenAI chat completion request; raises GatewayError(400) for what cannot be."""
    n = body.get("n")
    if n is not None and n != 1:
        raise GatewayError(
            400,
            f"n={n} is not supported by Anthropic models, which return one choice per "
            "request; send n=1 or several requests",
            param="n",
        )
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise GatewayError(
            400,
            "the legacy 'functions'/'function_call' fields are not translated for Anthropic "
            "models; send 'tools' and 'tool_choice' instead",
            param="functions",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise GatewayError(400, "'messages' must be a non-empty list", param="messages")

    system, turns = _split_messages(messages)
    payload: dict[str, Any] = {"model": model, "messages": turns}
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    # Anthropic requires max_tokens; OpenAI clients usually leave it out.
    payload["max_tokens"] = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        # OpenAI accepts 0..2, Anthropic 0..1 and rejects anything above.
        payload["temperature"] = min(float(temperature), 1.0)
    for name in ("top_p", "top_k"):
        if body.get(name) is not None:
            payload[name] = body[name]
    stop = body.get("stop")
    if isinstance(stop, str):
        payload["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        payload["stop_sequences"] = [s for s in stop if isinstance(s, str)]
    user = body.get("user")
    if isinstance(user, str) and user:
        payload["metadata"] = {"user_id": user}
    if stream:
        payload["stream"] = True

    tools = _tools(body.get("tools"))
    if tools:
        payload["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            payload["tool_choice"] = choice

    json_tool, instruction = _response_format(body.get("response_format"), payload)
    if instruction is not None:
        # Appended after the client's blocks so a cached system prefix stays cached.
        system.append({"type": "text", "text": instruction})
    if system:
        plain = len(system) == 1 and "cache_control" not in system[0]
        payload["system"] = system[0]["text"] if plain else system

    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return AnthropicRequest(payload, json_tool, include_usage)


def _split_messages(
    messages: list[Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System blocks (every system/developer message, hoisted) and alternating turns."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for position, message in enumerate(messages):
        where = f"messages[{position}]"
        if not isinstance(message, dict):
            raise GatewayError(400, f"{where} is not an object", param="messages")
        role = message.get("role")
        if role in ("system", "developer"):
            # Anthropic has one system prompt, no system turns: hoist them all.
            blocks = _text_only(message.get("content"), where)
            _mark_cache(blocks, message)
            system.extend(blocks)
            continue
        if role == "user":
            target, blocks = "user", _user_blocks(message.get("content"), where)
        elif role == "assistant":
            target, blocks = "assistant", _assistant_blocks(message, where)
        elif role == "tool":
            target, blocks = "user", [_tool_result(message, where)]
        else:
            raise GatewayError(
                400,
                f"{where}.role {role!r} is not one of system, developer, user, assistant, tool",
                param="messages",
            )
        if not blocks:
            continue  # Anthropic rejects empty content; an empty turn carries nothing
        _mark_cache(blocks, message)
        # Anthropic requires strict user/assistant alternation.
        if turns and turns[-1]["role"] == target:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": target, "content": blocks})
    for turn in turns:
        _finish_turn(turn)
    if turns and turns[-1]["role"] == "assistant":
        _strip_prefill(turns[-1])
    return system, turns


def _finish_turn(turn: dict[str, Any]) -> None:
    content: list[dict[str, Any]] = turn["content"]
    if turn["role"] == "user" and len(content) > 1:
        # Anthropic wants tool_result blocks first in their user turn.
        results = [b for b in content if b["type"] == "tool_result"]
        if results and len(results) < len(content):
            turn["content"] = results + [b for b in content if b["type"] != "tool_result"]
    elif len(content) == 1 and content[0]["type"] == "text" and "cache_control" not in content[0]:
        turn["content"] = content[0]["text"]


def _strip_prefill(turn: dict[str, Any]) -> None:
    """A final assistant turn is a prefill, which Anthropic rejects with trailing whitespace."""
    content = turn["content"]
    if isinstance(content, str):
        turn["content"] = content.rstrip()
    elif content and content[-1]["type"] == "text":
        content[-1] = {**content[-1], "text": content[-1]["text"].rstrip()}


def _mark_cache(blocks: list[dict[str, Any]], message: dict[str, Any]) -> None:
    """A message-level `cache_control` marks the end of that message's content."""
    cache = message.get("cache_control")
    if cache is not None and blocks:
        blocks[-1] = {**blocks[-1], "cache_control": cache}


def _text_block(text: str, part: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if part is not None and part.get("cache_control") is not None:
        block["cache_control"] = part["cache_control"]
    return block


def _text_only(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [_text_block(content)] if content else []
    if content is None:
        return []
    if not isinstance(content, list):
        raise GatewayError(400, f"{where}.content must be a string or a list", param="messages")
    blocks = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise GatewayError(
                400, f"{where}.content[{index}] must be a text part", param="messages"
            )
        text = part.get("text") if part["type"] == "text" else part.get("refusal")
        if isinstance(text, str) and text:
            blocks.append(_text_block(text, part))
    return blocks


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str) or content is None:
        return _text_only(content, where)
    if not isinstance(content, list):
        raise GatewayError(400, f"{where}.content must be a string or a list", param="messages")
    blocks = []
    for index, part in enumerate(content):
        block = _user_part(part, f"{where}.content[{index}]")
        if block is not None:
            blocks.append(block)
    return blocks


def _user_part(part: Any, where: str) -> dict[str, Any] | None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        text = part.get("text")
        return _text_block(text, part) if isinstance(text, str) and text else None
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        block = {"type": "image", "source": _image_source(url, where)}
    elif kind == "file":
        block = _document(part.get("file"), where)
    else:
        raise GatewayError(
            400,
            f"{where}: content part type {kind!r} is not supported for Anthropic models "
            "(supported: text, image_url, file with PDF data)",
            param="messages",
        )
    if part.get("cache_control") is not None:
        block["cache_control"] = part["cache_control"]
    return block


def _image_source(url: Any, where: str) -> dict[str, Any]:
    if isinstance(url, str):
        if url.startswith("data:"):
            media_type, data = _data_url(url, where)
            return {"type": "base64", "media_type": media_type, "data": data}
        if url.startswith(("https://", "http://")):
            return {"type": "url", "url": url}
    raise GatewayError(
        400, f"{where}: image_url.url must be a base64 data URL or an http(s) URL", param="messages"
    )


def _document(file: Any, where: str) -> dict[str, Any]:
    data_url = file.get("file_data") if isinstance(file, dict) else None
    if isinstance(data_url, str) and data_url.startswith("data:"):
        media_type, data = _data_url(data_url, where)
        if media_type == "application/pdf":
            source = {"type": "base64", "media_type": media_type, "data": data}
            return {"type": "document", "source": source}
    raise GatewayError(
        400,
        f"{where}: only PDF files sent inline as file.file_data (a base64 data URL) reach "
        "Anthropic models; file ids cannot be resolved",
        param="messages",
    )


def _data_url(url: str, where: str) -> tuple[str, str]:
    header, comma, data = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise GatewayError(400, f"{where}: data URL is not base64-encoded", param="messages")
    return header[5:-7], data


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks = _text_only(message.get("content"), where)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for index, call in enumerate(calls):
            blocks.append(_tool_use(call, f"{where}.tool_calls[{index}]"))
    return blocks


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise GatewayError(400, f"{where} needs function.name", param="messages")
    arguments = function.get("arguments") or "{}"
    try:
        tool_input = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        tool_input = None
    if not isinstance(tool_input, dict):
        # Anthropic stores tool input as an object, so there is nothing faithful to send.
        raise GatewayError(
            400, f"{where}.function.arguments must be a JSON object", param="messages"
        )
    return {"type": "tool_use", "id": call.get("id"), "name": function["name"], "input": tool_input}


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise GatewayError(400, f"{where} (role tool) needs tool_call_id", param="messages")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content is not None:
        parts = _user_blocks(content, where)
        if parts:
            block["content"] = parts
    return block


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise GatewayError(400, "'tools' must be a list", param="tools")
    out = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            raise GatewayError(
                400, f"tools[{index}]: only type 'function' tools are supported", param="tools"
            )
        if not isinstance(function.get("name"), str):
            raise GatewayError(400, f"tools[{index}].function.name is required", param="tools")
        spec: dict[str, Any] = {
            "name": function["name"],
            "input_schema": function.get("parameters") or _EMPTY_SCHEMA,
        }
        if function.get("description"):
            spec["description"] = function["description"]
        cache = tool.get("cache_control") or function.get("cache_control")
        if cache is not None:
            spec["cache_control"] = cache
        out.append(spec)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None or choice == "auto":
        spec: dict[str, Any] = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}  # Anthropic refuses disable_parallel_tool_use here
    elif choice == "required":
        spec = {"type": "any"}
    elif (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("function"), dict)
        and isinstance(choice["function"].get("name"), str)
    ):
        spec = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise GatewayError(
            400,
            "tool_choice must be 'auto', 'none', 'required' or "
            '{"type": "function", "function": {"name": ...}}',
            param="tool_choice",
        )
    if parallel is False:
        spec["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # auto is Anthropic's default; say nothing
    return spec


def _response_format(fmt: Any, payload: dict[str, Any]) -> tuple[str | None, str | None]:
    """(synthetic tool name, system instruction); may add the forced tool to `payload`."""
    if fmt is None:
        return None, None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None, None
    if kind == "json_object":
        return None, _JSON_OBJECT_INSTRUCTION
    spec = fmt.get("json_schema") if kind == "json_schema" else None
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise GatewayError(
            400,
            "response_format must be {'type': 'text'}, {'type': 'json_object'} or "
            "{'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}",
            param="response_format",
        )
    schema: dict[str, Any] = spec["schema"]
    if "tools" in payload or schema.get("type") != "object":
        # The forced tool would hide the client's tools (or cannot carry a
        # non-object root), so ask for the shape in words instead.
        shape = orjson.dumps(schema).decode()
        return None, f"{_JSON_OBJECT_INSTRUCTION} It must match this JSON Schema: {shape}"
    description = _JSON_TOOL_DESCRIPTION
    if isinstance(spec.get("description"), str):
        description = f"{description} {spec['description']}"
    payload["tools"] = [
        {"name": JSON_TOOL_NAME, "description": description, "input_schema": schema}
    ]
    payload["tool_choice"] = {"type": "tool", "name": JSON_TOOL_NAME}
    return JSON_TOOL_NAME, None
