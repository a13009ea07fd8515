"""Offline token estimates used when an upstream reports no usage."""

from __future__ import annotations

import socket
from typing import Any

import bpe_openai
import pytest

from keel.core import tokens
from keel.core.tokens import count_messages, count_text, encoding_name

SENTENCE = "Keel records the cost of every model call."
JAPANESE = "こんにちは世界"


def _user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


# -- count_text ----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "gpt-4", "gpt-3.5-turbo"])
def test_hello_world_is_two_tokens(model: str) -> None:
    assert count_text("hello world", model) == 2


@pytest.mark.parametrize(
    ("model", "encoding"),
    [("gpt-4o", "o200k_base"), ("gpt-4.1", "o200k_base"), ("gpt-4", "cl100k_base")],
)
def test_count_text_matches_the_model_encoding(model: str, encoding: str) -> None:
    reference = bpe_openai.get_encoding(encoding)
    for text in (SENTENCE, JAPANESE):
        assert count_text(text, model) == len(reference.encode(text))


def test_the_model_decides_the_encoding() -> None:
    # o200k_base packs Japanese twice as tightly as cl100k_base.
    assert count_text(JAPANESE, "gpt-4o") == 2
    assert count_text(JAPANESE, "gpt-4") == 4


def test_provider_prefix_is_ignored_for_known_models() -> None:
    assert count_text(JAPANESE, "openai/gpt-4o") == count_text(JAPANESE, "gpt-4o")


def test_empty_text_is_zero_tokens() -> None:
    assert count_text("", "gpt-4o") == 0


@pytest.mark.parametrize("model", [None, "", "acme-unknown-7b", "claude-sonnet-4-5"])
def test_unknown_model_falls_back_without_raising(model: str | None) -> None:
    assert encoding_name(model) in {"o200k_base", "cl100k_base"}
    assert count_text("hello world", model) == 2


def test_counting_works_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("token counting tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    tokens._encoding.cache_clear()  # force the encodings to load again, with no network

    assert count_text(JAPANESE, "gpt-4o") == 2
    assert count_text(JAPANESE, "gpt-4") == 4


# -- count_messages ------------------------------------------------------------------


def test_count_messages_grows_with_every_message() -> None:
    one = [_user("hello world")]
    two = [*one, {"role": "assistant", "content": SENTENCE}]

    assert count_messages([], "gpt-4o") < count_messages(one, "gpt-4o")
    # Each extra message adds its text plus per-message framing.
    assert count_messages(two, "gpt-4o") - count_messages(one, "gpt-4o") > count_text(
        SENTENCE, "gpt-4o"
    )


def test_count_messages_counts_the_text_of_every_message() -> None:
    short = count_messages([_user("hi")], "gpt-4o")
    long = count_messages([_user(SENTENCE * 10)], "gpt-4o")
    assert long - short == count_text(SENTENCE * 10, "gpt-4o") - count_text("hi", "gpt-4o")


def test_multi_part_content_counts_every_text_part() -> None:
    parts = [
        {"type": "text", "text": "hello"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "text", "text": " world"},
    ]
    assert count_messages([_user(parts)], "gpt-4o") == count_messages(
        [_user("hello world")], "gpt-4o"
    )
    assert count_messages([_user(parts)], "gpt-4o") > count_messages([_user([])], "gpt-4o")


def test_name_and_tool_calls_are_counted() -> None:
    plain = count_messages([_user("hi")], "gpt-4o")
    named = count_messages([{**_user("hi"), "name": "alice"}], "gpt-4o")
    assert named > plain

    tool_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    bare = count_messages([{"role": "assistant", "content": None}], "gpt-4o")
    calling = count_messages(
        [{"role": "assistant", "content": None, "tool_calls": [tool_call]}], "gpt-4o"
    )
    assert calling - bare >= count_text('{"city": "Paris"}', "gpt-4o")


def test_messages_that_are_not_objects_still_cost_framing() -> None:
    assert count_messages(["not a message"], "gpt-4o") > count_messages([], "gpt-4o")


# -- known gaps in core/tokens.py (strict: they fail loudly once fixed) --------------


@pytest.mark.parametrize("model", ["gpt-5", "gpt-5-mini", "gpt-4.1-nano", "gpt-4.1-2025-04-14"])
def test_gpt_5_and_gpt_4_1_families_use_o200k(model: str) -> None:
    assert encoding_name(model) == "o200k_base"


@pytest.mark.parametrize("model", ["openai/gpt-4-turbo", "ollama/llama3"])
def test_a_provider_prefix_does_not_select_o200k(model: str) -> None:
    assert encoding_name(model) == "cl100k_base"


def test_message_count_matches_openai_accounting() -> None:
    # OpenAI's accounting: 3 per message + role + content, plus 3 to prime the reply.
    assert count_messages([_user("hello world")], "gpt-4o") == 3 + 1 + 2 + 3
