"""What a provider dialect gives the fake server: its routes, its auth check, its errors.

Implemented by `fake_openai.OpenAIDialect` and `fake_anthropic.AnthropicDialect`; the server
in `fake_upstream` never branches on which dialect it is talking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from keel.testing.behavior import Behavior

# (parsed JSON body, behaviour) -> a JSON body, or the SSE frames of a stream.
Endpoint = Callable[[dict[str, Any], Behavior], bytes | list[bytes]]


class Dialect(Protocol):
    """One provider's wire format. Request headers arrive with lower-cased names."""

    def routes(self) -> dict[tuple[str, str], Endpoint]:
        """The (method, path) pairs served, each with the function that answers it."""
        ...

    def auth_error(
        self, headers: Mapping[str, str], api_key: str | None
    ) -> tuple[int, bytes] | None:
        """(status, body) when the request's credentials or required headers are wrong."""
        ...

    def error(
        self,
        status: int,
        message: str | None,
        error_type: str | None,
        code: str | None = None,
        param: str | None = None,
    ) -> bytes:
        """An error body for `status`; None picks the provider's usual message and type
        (`code` and `param` where the dialect's errors have them)."""
        ...

    def stream_error(self, message: str | None, error_type: str | None) -> bytes:
        """The SSE frame the provider sends when a stream fails midway."""
        ...

    def malformed(self, streaming: bool) -> bytes:
        """A body (or first SSE frame) that is not valid JSON."""
        ...
