"""Errors a user can act on: what went wrong, where, and what to do."""

from __future__ import annotations


class KeelError(Exception):
    """Base class of every error Keel raises on purpose."""


class ConfigError(KeelError):
    """The configuration is invalid; the message names the key and the fix."""


class GatewayError(KeelError):
    """A request the gateway refuses or cannot serve, rendered as an OpenAI error object.

    `status` is the HTTP status, `type` and `code` follow the OpenAI error shape,
    `param` names the offending request field when there is one.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param


class UpstreamError(KeelError):
    """One failed attempt at an upstream provider.

    `kind` is one of: "http" (the upstream answered with an error status),
    "timeout", "connection" (refused, reset, DNS), "malformed" (an answer that
    does not parse). `status` is set for "http"; `body` keeps the upstream's
    error body (already in OpenAI error shape) so a non-retryable 4xx can be
    passed to the client as the upstream said it.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        body: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s
        self.body = body

    @property
    def retryable(self) -> bool:
        """429, 5xx, timeouts, connection errors and malformed answers are worth another try."""
        if self.kind != "http":
            return True
        return self.status is not None and (self.status == 429 or self.status >= 500)

    def describe(self) -> str:
        """A short form for attempt logs: `429 rate limited` or `timeout after 30s`."""
        if self.kind == "http":
            return f"HTTP {self.status}: {self.message}"
        return f"{self.kind}: {self.message}"
