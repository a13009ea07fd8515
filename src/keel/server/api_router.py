"""The router of the REST API under /api: path patterns, query strings, auth, problems.

A route is a method and a path pattern (`/api/traces/{trace_id}`) with the query
parameters it accepts; any other parameter is an error (a typo must not be ignored).
JSON routes are plain functions from a `Request` to JSON-ready data; the router runs
each in a worker thread together with its serialisation (orjson), so neither the
database nor a large response ever holds up the event loop that also serves the
gateway. The threads are the API's own, a few of them: slow dashboard queries queue
there instead of taking the default executor the gateway uses (token counting).
Routes that take a JSON body (`POST`, `PUT`) get it parsed into `Request.body`;
raw ASGI handlers (`POST /api/scores`) can be mounted beside them.

Every error is an RFC 9457 problem document: 401 without the master key, 404 for an
unknown path, 405 (with `Allow`) for a known path and another method, 400 naming the
query parameter that is wrong.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import difflib
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

import orjson
from pydantic import BaseModel, ValidationError

from keel.core.errors import GatewayError
from keel.server.api_scores import problem
from keel.server.asgi import (
    ClientGone,
    Message,
    Receive,
    Scope,
    Send,
    header_map,
    read_body,
    send_bytes,
)

log = logging.getLogger("keel.server.api")

AsgiHandler = Callable[[Scope, Receive, Send], Awaitable[None]]
Authorize = Callable[[dict[bytes, bytes]], bool]
_MAX_FIELDS = 200
BODY_LIMIT = 4 * 1024 * 1024

BodyModel = TypeVar("BodyModel", bound=BaseModel)


class BadParameter(Exception):
    """A query parameter the client must fix; becomes a 400 problem naming it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


class ApiProblem(Exception):
    """Any other answer that is not a success: status, title and what to do."""

    def __init__(
        self, status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors


def encode_cursor(kind: str, key: tuple[float, str]) -> str:
    """An opaque page token for `key` of a list of `kind` (traces, sessions...)."""
    raw = orjson.dumps([kind, key[0], key[1]])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(kind: str, token: str) -> tuple[float, str]:
    """The key in a token from `encode_cursor(kind, ...)`; BadParameter for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = orjson.loads(raw)
    except (binascii.Error, ValueError):
        decoded = None
    if (
        not isinstance(decoded, list)
        or len(decoded) != 3
        or decoded[0] != kind
        or not isinstance(decoded[1], int | float)
        or isinstance(decoded[1], bool)
        or not isinstance(decoded[2], str)
    ):
        raise BadParameter(
            "cursor", f"not a cursor of this list; pass the next_cursor a {kind} page returned"
        )
    return float(decoded[1]), decoded[2]


class Query:
    """One request's query string, read through typed accessors that raise BadParameter."""

    def __init__(self, raw: bytes, allowed: frozenset[str]) -> None:
        try:
            pairs = parse_qsl(
                raw.decode("latin-1"),
                keep_blank_values=True,
                max_num_fields=_MAX_FIELDS,
                errors="replace",
            )
        except ValueError:
            raise BadParameter("query", f"more than {_MAX_FIELDS} parameters") from None
        self._values: dict[str, list[str]] = {}
        for name, value in pairs:
            if name not in allowed:
                raise BadParameter(name, _unknown(name, allowed))
            self._values.setdefault(name, []).append(value)

    def texts(self, name: str) -> list[str]:
        """Every value of a repeatable parameter, in order; none may be empty."""
        values = self._values.get(name, [])
        if any(not value for value in values):
            raise BadParameter(name, "must not be empty")
        return values

    def text(self, name: str, *, max_length: int = 1000) -> str | None:
        """The value of a parameter given at most once; None when absent."""
        values = self.texts(name)
        if len(values) > 1:
            raise BadParameter(name, "give it once")
        if values and len(values[0]) > max_length:
            raise BadParameter(name, f"longer than {max_length} characters")
        return values[0] if values else None

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        """One of `choices`, or None when absent."""
        value = self.text(name)
        if value is not None and value not in choices:
            raise BadParameter(name, f"must be one of {', '.join(choices)} (got {value!r})")
        return value

    def number(self, name: str, *, minimum: float = 0.0) -> float | None:
        """A finite number not below `minimum`, or None when absent."""
        value = self.text(name)
        if value is None:
            return None
        try:
            number = float(value)
        except ValueError:
            raise BadParameter(name, f"must be a number (got {value!r})") from None
        if not math.isfinite(number) or number < minimum:
            raise BadParameter(name, f"must be a finite number >= {minimum:g} (got {value!r})")
        return number

    def integer(self, name: str, *, default: int, minimum: int, maximum: int) -> int:
        """An integer in [minimum, maximum]; `default` when absent."""
        value = self.text(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise BadParameter(name, f"must be an integer (got {value!r})") from None
        if not minimum <= number <= maximum:
            raise BadParameter(name, f"must be between {minimum} and {maximum} (got {number})")
        return number

    def time(self, name: str, *, required: bool = False) -> float | None:
        """Epoch seconds from epoch seconds or ISO 8601 (UTC unless an offset is given)."""
        value = self.text(name)
        if value is None:
            if required:
                raise BadParameter(
                    name, "required: epoch seconds or ISO 8601, e.g. 2025-01-31T12:00:00Z"
                )
            return None
        try:
            return _epoch(value)
        except ValueError:
            raise BadParameter(
                name,
                f"{value!r} is neither epoch seconds nor ISO 8601 "
                "(e.g. 1738324800 or 2025-01-31T12:00:00Z; write + as %2B)",
            ) from None

    def cursor(self, kind: str) -> tuple[float, str] | None:
        """The page key of `cursor`, or None for the first page."""
        token = self.text("cursor")
        return None if token is None else decode_cursor(kind, token)


def _epoch(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ValueError(value)
        return number
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        # A '+' the client did not percent-encode arrives as a space: "...T12:00:00 02:00".
        head, space, offset = value.rpartition(" ")
        if not space:
            raise
        moment = datetime.fromisoformat(f"{head}+{offset}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _unknown(name: str, allowed: Iterable[str]) -> str:
    choices = sorted(allowed)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listed = ", ".join(choices) if choices else "none"
    return f"unknown parameter; {hint}(allowed here: {listed})"


@dataclass(frozen=True, slots=True)
class Request:
    """What a JSON handler sees: the path parameters, the query string, the JSON body."""

    path: dict[str, str]
    query: Query
    body: Any = None


JsonHandler = Callable[[Request], Any]


@dataclass(frozen=True, slots=True)
class Route:
    """One method and path pattern, with the query parameters it accepts."""

    method: str
    pattern: str
    parameters: frozenset[str]
    regex: re.Pattern[str]
    handler: JsonHandler | None = None
    asgi: AsgiHandler | None = None
    takes_body: bool = False


def _compile(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", pattern)
    regex = "".join(
        f"(?P<{part}>[^/]+)" if index % 2 else re.escape(part) for index, part in enumerate(parts)
    )
    return re.compile(f"^{regex}$")


class ApiRouter:
    """Dispatches /api requests to their routes, guarded by `authorize` (the master key)."""

    def __init__(self, authorize: Authorize, *, workers: int = 4) -> None:
        self._authorize = authorize
        self._routes: list[Route] = []
        self._workers = workers
        self._executor: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Stop the worker threads once the requests they run are answered (at shutdown)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    @property
    def routes(self) -> list[Route]:
        """Every route, in registration order (the OpenAPI document describes each)."""
        return list(self._routes)

    def get(self, pattern: str, handler: JsonHandler, parameters: Iterable[str] = ()) -> None:
        """Serve `GET pattern` with a JSON handler accepting `parameters` in the query."""
        self._routes.append(
            Route("GET", pattern, frozenset(parameters), _compile(pattern), handler=handler)
        )

    def send(
        self, method: str, pattern: str, handler: JsonHandler, parameters: Iterable[str] = ()
    ) -> None:
        """Serve `method pattern` (POST, PUT) with a JSON handler that gets the JSON body."""
        self._routes.append(
            Route(
                method,
                pattern,
                frozenset(parameters),
                _compile(pattern),
                handler=handler,
                takes_body=True,
            )
        )

    def mount(self, method: str, pattern: str, handler: AsgiHandler) -> None:
        """Serve `method pattern` with a raw ASGI handler (it reads its own body)."""
        self._routes.append(Route(method, pattern, frozenset(), _compile(pattern), asgi=handler))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._authorize(header_map(scope)):
            await problem(
                _with_headers(send, [(b"www-authenticate", b"Bearer")]),
                401,
                "Unauthorized",
                "Send 'Authorization: Bearer <master key>'.",
            )
            return
        path = _raw_path(scope)
        allowed: list[str] = []
        for route in self._routes:
            match = route.regex.match(path)
            if match is None:
                continue
            if route.method != scope["method"]:
                allowed.append(route.method)
                continue
            if route.asgi is not None:
                await route.asgi(scope, receive, send)
                return
            params = {name: unquote(value) for name, value in match.groupdict().items()}
            body = None
            if route.takes_body:
                try:
                    body = await _json_body(scope, receive)
                except ClientGone:
                    return
                except ApiProblem as exc:
                    await problem(send, exc.status, exc.title, exc.detail)
                    return
            await self._json(route, params, scope, send, body)
            return
        if allowed:
            allow = ", ".join(sorted(set(allowed)))
            await problem(
                _with_headers(send, [(b"allow", allow.encode())]),
                405,
                "Method Not Allowed",
                f"{scope['method']} is not allowed on {scope['path']}; use {allow}.",
            )
            return
        await problem(
            send,
            404,
            "Not Found",
            f"No API route {scope['path']}; GET /api/openapi.json lists them.",
        )

    async def _json(
        self, route: Route, params: dict[str, str], scope: Scope, send: Send, body: Any = None
    ) -> None:
        query_string: bytes = scope.get("query_string", b"")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="keel-api")
        loop = asyncio.get_running_loop()
        try:
            payload = await loop.run_in_executor(
                self._executor, _run, route, params, query_string, body
            )
        except BadParameter as exc:
            errors = [{"parameter": exc.parameter, "message": exc.message}]
            await problem(send, 400, "Invalid query parameter", str(exc), errors)
        except ApiProblem as exc:
            await problem(send, exc.status, exc.title, exc.detail, exc.errors)
        except Exception:
            log.exception("%s %s failed", route.method, scope["path"])
            await problem(
                send, 500, "Internal Server Error", "The query failed; the server log says why."
            )
        else:
            await send_bytes(send, 200, payload)


def _run(route: Route, params: dict[str, str], query_string: bytes, body: Any) -> bytes:
    """Parse, answer and serialise one request: the part that runs in a worker thread."""
    assert route.handler is not None
    request = Request(params, Query(query_string, route.parameters), body)
    return orjson.dumps(route.handler(request))


async def _json_body(scope: Scope, receive: Receive) -> Any:
    """The request's JSON body (an empty body is an empty object); ApiProblem otherwise."""
    try:
        raw = await read_body(receive, header_map(scope), BODY_LIMIT)
    except GatewayError as exc:
        raise ApiProblem(413, "Payload Too Large", exc.message) from None
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiProblem(400, "Invalid JSON", f"The body is not valid JSON: {exc}") from None


def _raw_path(scope: Scope) -> str:
    # The raw path keeps %2F inside a parameter (a session id may contain '/').
    raw = scope.get("raw_path")
    if not raw:
        return str(scope["path"])
    return bytes(raw).split(b"?", 1)[0].decode("utf-8", "replace")


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message["headers"], *extra]
        await send(message)

    return sending


def validated(model: type[BodyModel], body: Any) -> BodyModel:
    """`body` validated by `model`; a 422 problem listing every wrong field otherwise."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = [
            {
                "field": ".".join(str(part) for part in error["loc"]) or "body",
                "message": "unknown field" if error["type"] == "extra_forbidden" else error["msg"],
            }
            for error in exc.errors(include_url=False)
        ]
        raise ApiProblem(
            422, "Invalid request", "The request was not carried out.", errors
        ) from None
