"""Token usage by kind, kept apart from price so history can be re-priced."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Usage:
    """Tokens of one generation, by kind.

    `input_tokens` counts every prompt token including the cached ones;
    `cache_read_tokens` and `cache_write_tokens` say how many of them were read
    from or written to the provider's prompt cache. `output_tokens` includes
    `reasoning_tokens`. `estimated` is True when Keel counted the tokens itself
    because the upstream reported none.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens, as OpenAI reports `total_tokens`."""
        return self.input_tokens + self.output_tokens

    def as_dict(self) -> dict[str, int | bool]:
        """The usage as a flat JSON-ready mapping."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "estimated": self.estimated,
        }


def usage_from_openai(raw: object) -> Usage | None:
    """Read an OpenAI `usage` object (chat or embeddings); None when absent or not an object."""
    if not isinstance(raw, dict) or ("prompt_tokens" not in raw and "completion_tokens" not in raw):
        return None
    prompt = _int(raw.get("prompt_tokens"))
    completion = _int(raw.get("completion_tokens"))
    prompt_details = raw.get("prompt_tokens_details")
    completion_details = raw.get("completion_tokens_details")
    cached = _int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    reasoning = (
        _int(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, dict)
        else 0
    )
    return Usage(
        input_tokens=prompt,
        output_tokens=completion,
        cache_read_tokens=cached,
        reasoning_tokens=reasoning,
    )


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
