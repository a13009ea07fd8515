"""The exporter's one kind of I/O: POST a JSON body, get a status back (standard library only).

`Transport` is the boundary; `UrllibTransport` the implementation. A transport
never raises for an HTTP status: only a failure to get any answer (refused,
reset, timed out, unreadable) raises `TransportError`, which the exporter retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Response:
    """What the exporter needs from an answer: the status and a `Retry-After`, if any."""

    status: int
    retry_after: str | None = None


class TransportError(Exception):
    """No answer from the server (connection refused or reset, timeout, garbled response)."""


class Transport(Protocol):
    """Sends one request; runs on the exporter thread only."""

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        """POST `body` to `url`; the response status, or TransportError without one."""
        ...


class UrllibTransport:
    """`urllib.request`, honouring the usual `*_PROXY` / `NO_PROXY` environment variables."""

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        """POST with `urllib`; HTTP error statuses are answers, not exceptions."""
        import urllib.error  # imported here: `import keel` must stay cheap
        import urllib.request

        request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                answer.read()
                return Response(answer.status, answer.headers.get("Retry-After"))
        except urllib.error.HTTPError as answer:
            with answer:
                return Response(answer.code, answer.headers.get("Retry-After"))
        except Exception as exc:  # URLError, OSError, timeouts, http.client.HTTPException
            reason = getattr(exc, "reason", None) or exc
            raise TransportError(f"{type(exc).__name__}: {reason}") from exc
