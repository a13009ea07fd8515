"""`validate_chat_body` / `validate_embeddings_body`: what a client gets back for a bad body."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from keel.core.errors import GatewayError
from keel.gateway.call import validate_chat_body, validate_embeddings_body

USER = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> dict[str, Any]:
    """A valid chat body with `fields` set (a value of ... removes the field)."""
    body: dict[str, Any] = {"model": "fast", "messages": USER}
    for key, value in fields.items():
        if value is ...:
            body.pop(key)
        else:
            body[key] = value
    return body


# (body, param the error names, words the message must contain)
BAD_CHAT: list[tuple[Any, str | None, str]] = [
    ([], None, "JSON object"),
    ("hello", None, "JSON object"),
    (None, None, "JSON object"),
    (chat(model=...), "model", "'model'"),
    (chat(model=""), "model", "non-empty string"),
    (chat(model=3), "model", "string"),
    (chat(messages=...), "messages", "'messages'"),
    (chat(messages=[]), "messages", "non-empty array"),
    (chat(messages={"role": "user"}), "messages", "array"),
    (chat(messages="hi"), "messages", "array"),
    (chat(messages=["hi"]), "messages[0]", "object"),
    (chat(messages=[*USER, {"content": "no role"}]), "messages[1].role", "role"),
    (chat(messages=[{"role": 1, "content": "x"}]), "messages[0].role", "string"),
    (chat(stream="yes"), "stream", "boolean"),
    (chat(stream=1), "stream", "boolean"),
    (chat(temperature="hot"), "temperature", "number"),
    (chat(temperature=True), "temperature", "number"),
    (chat(top_p=[1]), "top_p", "number"),
    (chat(frequency_penalty="0"), "frequency_penalty", "number"),
    (chat(presence_penalty={}), "presence_penalty", "number"),
    (chat(max_tokens=1.5), "max_tokens", "integer"),
    (chat(max_tokens="10"), "max_tokens", "integer"),
    (chat(max_completion_tokens=2.0), "max_completion_tokens", "integer"),
    (chat(n=True), "n", "integer"),
    (chat(seed="7"), "seed", "integer"),
    (chat(top_logprobs=False), "top_logprobs", "integer"),
    (chat(stream_options=True), "stream_options", "object"),
]


@pytest.mark.parametrize(("body", "param", "words"), BAD_CHAT)
def test_bad_chat_body_is_a_400_naming_the_field(body: Any, param: str | None, words: str) -> None:
    with pytest.raises(GatewayError) as caught:
        validate_chat_body(body)
    error = caught.value
    assert error.status == 400
    assert error.param == param
    assert error.type == "invalid_request_error"
    assert words in error.message
    if param is not None:
        assert param.split("[")[0] in error.message


GOOD_CHAT: list[dict[str, Any]] = [
    chat(),
    chat(stream=True, stream_options={"include_usage": True}),
    chat(stream=False, temperature=0, top_p=0.5, frequency_penalty=-1, presence_penalty=1.5),
    chat(temperature=None, max_tokens=None, n=None),  # explicit nulls are "not given"
    chat(max_tokens=10, max_completion_tokens=20, n=2, seed=-3, top_logprobs=0),
    chat(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": None, "tool_calls": []},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        response_format={"type": "json_object"},
        unknown_vendor_field={"kept": True},
    ),
]


@pytest.mark.parametrize("body", GOOD_CHAT)
def test_valid_chat_body_passes_unchanged(body: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    assert validate_chat_body(body) is body
    assert body == before


BAD_EMBEDDINGS: list[tuple[Any, str | None, str]] = [
    ([], None, "JSON object"),
    ({"input": "x"}, "model", "'model'"),
    ({"model": "", "input": "x"}, "model", "non-empty string"),
    ({"model": "embed"}, "input", "'input'"),
    ({"model": "embed", "input": None}, "input", "'input'"),
    ({"model": "embed", "input": []}, "input", "non-empty array"),
    ({"model": "embed", "input": 3}, "input", "string"),
    ({"model": "embed", "input": {"text": "x"}}, "input", "string"),
]


@pytest.mark.parametrize(("body", "param", "words"), BAD_EMBEDDINGS)
def test_bad_embeddings_body_is_a_400_naming_the_field(
    body: Any, param: str | None, words: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        validate_embeddings_body(body)
    assert caught.value.status == 400
    assert caught.value.param == param
    assert words in caught.value.message


@pytest.mark.parametrize(
    "body",
    [
        {"model": "embed", "input": "one text"},
        {"model": "embed", "input": ["a", "b"]},
        {"model": "embed", "input": [[1, 2, 3]], "dimensions": 64, "encoding_format": "float"},
    ],
)
def test_valid_embeddings_body_passes_unchanged(body: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    assert validate_embeddings_body(body) is body
    assert body == before
