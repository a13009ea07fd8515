"""The CLI's HTTP client for a running Keel's REST API (standard library only).

Commands meant for CI (`keel prompts push` on merge) reach the registry through
`keel serve`, where only the server's URL and a key are known. Every request goes
through `KeelApi.request`: JSON in, JSON out, `Authorization: Bearer <key>` when a
key is set. A problem document (RFC 9457) becomes `ApiProblem`; a server that
cannot be reached becomes `KeelUnreachable`, so a command can say which it was.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import orjson

DEFAULT_URL = "http://127.0.0.1:4000"


class ApiError(Exception):
    """A request that did not succeed; `str()` is the line to show the user."""


class KeelUnreachable(ApiError):
    """No HTTP answer at all: refused, DNS, timeout, reset."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach Keel at {url}: {reason}")
        self.url = url
        self.reason = reason


class ApiProblem(ApiError):
    """An error answer: status, title, detail and, for 422, the fields that are wrong."""

    def __init__(
        self, status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []


def segment(value: str) -> str:
    """`value` quoted as one path segment (a `/` in it cannot change the route)."""
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class KeelApi:
    """The REST API of the Keel at `url`, called with `key` (a bearer token) if given."""

    url: str
    key: str | None = None
    timeout_s: float = 30.0
    user_agent: str = "keel-cli"

    def get(self, path: str, query: dict[str, str] | None = None) -> Any:
        """GET `path` (under the base URL) and return the decoded JSON."""
        return self.request("GET", path, query=query)

    def post(self, path: str, body: Any) -> Any:
        """POST `body` as JSON to `path` and return the decoded JSON."""
        return self.request("POST", path, body=body)

    def put(self, path: str, body: Any) -> Any:
        """PUT `body` as JSON to `path` and return the decoded JSON."""
        return self.request("PUT", path, body=body)

    def pages(self, path: str, query: dict[str, str] | None = None) -> Iterator[Any]:
        """Every item of a paged list (`{data, next_cursor}`), following the cursors."""
        query = dict(query or {})
        while True:
            page = self.get(path, query)
            yield from page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return
            query["cursor"] = cursor

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        """Send one request; ApiProblem for an error status, KeelUnreachable for no answer."""
        target = self.url.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(target, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise _problem(exc.code, exc.reason, _read(exc)) from None
        except urllib.error.URLError as exc:
            raise KeelUnreachable(self.url, _reason(exc.reason)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise KeelUnreachable(self.url, _reason(exc)) from None
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise ApiProblem(
                0, "Not JSON", f"{target} answered something that is not JSON; is it Keel?"
            ) from None


def _read(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read()
    except (OSError, http.client.HTTPException):
        return b""


def _problem(status: int, reason: str, payload: bytes) -> ApiProblem:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        # Not Keel's answer (a proxy's error page, say): the status is all there is to say.
        return ApiProblem(status, str(reason), f"HTTP {status} {reason}".rstrip())
    title = str(document.get("title") or reason or "")
    detail = document.get("detail")
    if not isinstance(detail, str) or not detail:
        error = document.get("error")  # the OpenAI dialect, should /api sit behind /v1 auth
        detail = error.get("message") if isinstance(error, dict) else None
    errors = document.get("errors")
    return ApiProblem(
        status,
        title,
        str(detail or f"HTTP {status} {title}".rstrip()),
        [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else None,
    )


def _reason(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__
