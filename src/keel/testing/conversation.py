"""What the fake upstream reads from a chat request: the text it echoes and the token counts.

Both dialects carry messages whose `content` is a string or a list of typed parts; these
helpers read either shape without validating anything else in the request.
"""

from __future__ import annotations

from typing import Any

from keel.testing.behavior import Behavior

# OpenAI's published chat accounting: 3 tokens of framing per message, 3 to prime the reply.
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_REPLY = 3


def content_text(content: Any) -> str:
    """The text of a message `content`: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        text = part.get("text")
        if isinstance(text, str):
            texts.append(text)
        elif part.get("type") == "tool_result":
            texts.append(content_text(part.get("content")))
    return " ".join(texts)


def last_user_text(messages: Any) -> str:
    """The text of the last message with role "user" (empty when there is none)."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def word_count(text: str) -> int:
    """A rough token count: whitespace-separated words."""
    return len(text.split())


def prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt size in the chat accounting: words of every message plus framing."""
    messages = body.get("messages")
    total = _TOKENS_PER_REPLY + word_count(content_text(body.get("system")))
    if isinstance(messages, list):
        for message in messages:
            total += _TOKENS_PER_MESSAGE
            if isinstance(message, dict):
                total += word_count(content_text(message.get("content")))
    return total


def reply_text(body: dict[str, Any], behavior: Behavior) -> str:
    """The assistant's text: the configured reply, else an echo of the last user message."""
    if behavior.reply is not None:
        return behavior.reply
    return "Echo: " + last_user_text(body.get("messages"))


def completion_tokens(text: str) -> int:
    """Tokens of a generated text; never zero, as a real model spends at least one."""
    return max(1, word_count(text))


def split_text(text: str, pieces: int) -> list[str]:
    """`text` cut into `pieces` nearly equal parts (fewer only if it has fewer characters)."""
    count = max(1, min(pieces, len(text)))
    size, extra = divmod(len(text), count)
    parts: list[str] = []
    start = 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        parts.append(text[start:end])
        start = end
    return parts
