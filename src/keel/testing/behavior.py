"""What the fake upstream does for one request: the default `Behavior` and scripted `Fault`s.

A `Behavior` describes a healthy answer (latency, reply text, stream chunking, tool call,
cached tokens, scripted logprobs). A `Fault` is a one-shot deviation consumed by exactly one
request: extra latency, an error status, a hang, a connection reset, a malformed body, a
truncated or slow stream, or an error event in the middle of a stream. Both are frozen values,
so a test can build them anywhere and hand them to the fake from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FaultKind = Literal[
    "answer",
    "delay",
    "status",
    "hang",
    "reset",
    "malformed",
    "truncate_stream",
    "slow_stream",
    "stream_error",
]

# Longer than any client timeout a test or benchmark sets; cancelled when the client leaves.
HANG_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the fake answers with when the request offers `tools`."""

    name: str
    arguments: str  # JSON text, exactly as OpenAI puts it on the wire


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One token of a scripted answer with its log probability and its top alternatives.

    `top` lists (token, logprob) pairs as the answer's `top_logprobs` shows them, most likely
    first; the fake cuts it to the request's `top_logprobs` count.
    """

    token: str
    logprob: float = 0.0
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Behavior:
    """How the fake answers a healthy request.

    `reply=None` echoes the last user message as ``"Echo: <text>"``. Streams split the reply
    (or the tool-call arguments) into `chunks` pieces of text, `chunk_delay_s` apart.
    `cached_tokens` is reported as OpenAI ``prompt_tokens_details.cached_tokens`` and
    Anthropic ``cache_read_input_tokens``; `cache_creation_tokens` as Anthropic
    ``cache_creation_input_tokens``. `logprobs` scripts the tokens (and their alternatives)
    reported when an OpenAI request asks for `logprobs`; their texts should spell `reply`.
    Without it the fake cuts the reply into `chunks` tokens with made-up alternatives.
    """

    latency_s: float = 0.0
    reply: str | None = None
    chunks: int = 4
    chunk_delay_s: float = 0.0
    tool_call: ToolCall | tuple[str, str] | None = None
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    # False imitates servers that report no usage at all (and ignore stream_options).
    reports_usage: bool = True
    logprobs: tuple[TokenLogprob, ...] | None = None

    @property
    def tool(self) -> ToolCall | None:
        """The configured tool call, whichever form it was given in."""
        if self.tool_call is None or isinstance(self.tool_call, ToolCall):
            return self.tool_call
        return ToolCall(*self.tool_call)


@dataclass(frozen=True, slots=True)
class Fault:
    """A scripted deviation for one request; build it with the class methods below."""

    kind: FaultKind
    delay_s: float = 0.0
    status_code: int = 0
    message: str | None = None
    error_type: str | None = None
    error_code: str | None = None  # OpenAI dialect: the error's `code`
    error_param: str | None = None  # OpenAI dialect: the error's `param`
    retry_after: float | None = None
    after_chunks: int = 0
    chunk_delay_s: float = 0.0
    behavior: Behavior | None = None

    @classmethod
    def answer(cls, behavior: Behavior) -> Fault:
        """Answer this one request with `behavior` instead of the default."""
        return cls("answer", behavior=behavior)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Wait `seconds` more than usual, then answer normally."""
        return cls("delay", delay_s=seconds)

    @classmethod
    def status(
        cls,
        status_code: int,
        *,
        retry_after: float | None = None,
        message: str | None = None,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        delay_s: float = 0.0,
    ) -> Fault:
        """Answer with an HTTP error in the endpoint's dialect, with an optional Retry-After
        (`code` and `param` fill those fields of an OpenAI error; Anthropic has none)."""
        return cls(
            "status",
            delay_s=delay_s,
            status_code=status_code,
            message=message,
            error_type=error_type,
            error_code=code,
            error_param=param,
            retry_after=retry_after,
        )

    @classmethod
    def hang(cls, seconds: float = HANG_SECONDS) -> Fault:
        """Never answer (sleep `seconds`); the client's timeout is what ends the request."""
        return cls("hang", delay_s=seconds)

    @classmethod
    def reset(cls, *, delay_s: float = 0.0) -> Fault:
        """Reset the TCP connection (RST) without sending any HTTP response."""
        return cls("reset", delay_s=delay_s)

    @classmethod
    def malformed(cls) -> Fault:
        """Answer 200 with a body (or SSE event) that is not valid JSON."""
        return cls("malformed")

    @classmethod
    def truncate_stream(cls, after_chunks: int = 2) -> Fault:
        """Send `after_chunks` SSE events, then close the connection mid-stream.

        A non-stream request gets its headers and half its body before the close.
        """
        return cls("truncate_stream", after_chunks=after_chunks)

    @classmethod
    def slow_stream(cls, chunk_delay_s: float) -> Fault:
        """Stream normally but wait `chunk_delay_s` before every SSE event."""
        return cls("slow_stream", chunk_delay_s=chunk_delay_s)

    @classmethod
    def stream_error(
        cls,
        after_chunks: int = 1,
        *,
        message: str | None = None,
        error_type: str | None = None,
    ) -> Fault:
        """Send `after_chunks` SSE events, then an in-stream error event, then end the stream."""
        return cls(
            "stream_error", after_chunks=after_chunks, message=message, error_type=error_type
        )
