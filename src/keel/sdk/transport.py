"""The SDK's HTTP I/O (standard library only): the exporter's POST, the prompt client's GET.

`Transport` (POST a JSON body, get a status back) and `GetTransport` (GET a
resource, get its status and body) are the boundaries; `UrllibTransport`
implements both. A transport never raises for an HTTP status: only a failure to
get any answer (refused, reset, timed out, unreadable) raises `TransportError`,
which the exporter retries and the prompt client treats as "server unreachable".
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


class GetTransport(Protocol):
    """Fetches one resource; used by the prompt client (`keel.get_prompt`)."""

    def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> tuple[int, bytes]:
        """GET `url`; (status, body) of the answer, or TransportError without one."""
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

    def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> tuple[int, bytes]:
        """GET with `urllib`; an HTTP error status comes back with its body, not as an exception."""
        import urllib.error
        import urllib.request

        request = urllib.request.Request(url, headers=dict(headers), method="GET")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as answer:
            with answer:
                try:
                    body = answer.read()
                except Exception:  # the status is the answer; a lost error body is no failure
                    body = b""
                return answer.code, body
        except Exception as exc:  # URLError, OSError, timeouts, http.client.HTTPException
            reason = getattr(exc, "reason", None) or exc
            raise TransportError(f"{type(exc).__name__}: {reason}") from exc
