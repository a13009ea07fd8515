"""Offline token estimates (o200k_base / cl100k_base shipped by bpe-openai).

Used only when an upstream reports no usage; callers run it off the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

# Per-message framing overhead of the chat format (OpenAI's published accounting).
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_REPLY = 3
# Families on o200k_base that bpe-openai's model table may not know yet.
_O200K = re.compile(r"^(chatgpt-4o|gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o\d)")


@lru_cache(maxsize=8)
def _encoding(name: str) -> Any:
    import bpe_openai  # loading the tables takes ~0.7 s: only when a count is needed

    return bpe_openai.get_encoding(name)


def encoding_name(model: str | None) -> str:
    """o200k_base for the GPT-4o/4.1/5 and o-series families, cl100k_base otherwise."""
    if not model:
        return "cl100k_base"
    base = model.rsplit("/", 1)[-1]
    import bpe_openai

    try:
        return str(bpe_openai.encoding_name_for_model(base))
    except Exception:  # unknown to the library: decide by family
        pass
    return "o200k_base" if _O200K.match(base) else "cl100k_base"


def count_text(text: str, model: str | None = None) -> int:
    """Tokens in `text` under the model's encoding."""
    if not text:
        return 0
    return len(_encoding(encoding_name(model)).encode(text))


def count_messages(messages: Iterable[Any], model: str | None = None) -> int:
    """Tokens of a chat prompt: message framing plus every text part."""
    total = _TOKENS_PER_REPLY
    for message in messages:
        total += _TOKENS_PER_MESSAGE
        if isinstance(message, dict):
            role = message.get("role")
            if isinstance(role, str):
                total += count_text(role, model)
            total += count_text(_text_of(message.get("content")), model)
            name = message.get("name")
            if isinstance(name, str):
                total += count_text(name, model)
            tool_calls = message.get("tool_calls")
            if isinstance(tool_calls, list):
                total += count_text(str(tool_calls), model)
    return total


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and "text" in part
        )
    return ""
