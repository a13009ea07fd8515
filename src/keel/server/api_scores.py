"""`POST /api/scores`: attach a score to a trace, a span or a session.

201 with the score's id when it is new; 200 when a score with the id the client chose
was there already and is replaced (a retried request, or a changed vote).

The body is validated here, at the edge (pydantic); errors are problem documents
(RFC 9457, `application/problem+json`) listing every field that is wrong. The insert
runs in a worker thread: the event loop never waits on the database.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from keel.core.errors import GatewayError
from keel.core.ids import new_trace_id
from keel.core.scores import DATA_TYPES, DataType, Score, Source, check_value, infer_data_type
from keel.server.asgi import ClientGone, Receive, Scope, Send, header_map, read_body
from keel.server.openai_routes import OpenAIRoutes
from keel.store.scores import ScoreRepository

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_PROBLEM = [(b"content-type", b"application/problem+json")]
_LIMIT = 1024 * 1024


class ScoreBody(BaseModel):
    """What a client sends; unknown keys are an error (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$",
        description="Your id for the score (letters, digits, . _ : -; up to 64): sending "
        "the same id again replaces the score, so a retry never counts twice and a user "
        "can change their vote. Without one, Keel makes one up.",
    )
    name: str = Field(min_length=1, max_length=200)
    value: bool | int | float | str
    data_type: DataType | None = None
    trace_id: str | None = None
    span_id: str | None = None
    session_id: str | None = Field(default=None, min_length=1, max_length=500)
    source: Source = "api"
    comment: str | None = Field(default=None, max_length=10_000)
    author: str | None = Field(default=None, max_length=200)

    @field_validator("trace_id")
    @classmethod
    def _trace_id(cls, value: str | None) -> str | None:
        if value is not None and not _HEX32.match(value):
            raise ValueError("must be 32 lowercase hex digits (a W3C trace id)")
        return value

    @field_validator("span_id")
    @classmethod
    def _span_id(cls, value: str | None) -> str | None:
        if value is not None and not _HEX16.match(value):
            raise ValueError("must be 16 lowercase hex digits (a W3C span id)")
        return value


class ScoreRoutes:
    """Creates scores; guarded by the master key like the rest of the API."""

    def __init__(self, repository: ScoreRepository, auth: OpenAIRoutes) -> None:
        self._repository = repository
        self._auth = auth

    async def create(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = header_map(scope)
        if not self._auth.authorized(headers):
            await problem(send, 401, "Unauthorized", "Send 'Authorization: Bearer <master key>'.")
            return
        try:
            raw = await read_body(receive, headers, _LIMIT)
        except ClientGone:
            return
        except GatewayError as exc:  # the body is over the limit
            await problem(send, exc.status, "Payload Too Large", exc.message)
            return
        try:
            body = ScoreBody.model_validate_json(raw)
        except ValidationError as exc:
            await problem(send, 422, "Invalid score", "The score was not stored.", _errors(exc))
            return
        score, errors = _score(body)
        if score is None:
            await problem(send, 422, "Invalid score", "The score was not stored.", errors)
            return
        created = await asyncio.to_thread(self._repository.add, score)
        payload = orjson.dumps({"id": score.score_id, "data_type": score.data_type})
        await send(
            {
                "type": "http.response.start",
                "status": 201 if created else 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _score(body: ScoreBody) -> tuple[Score | None, list[dict[str, str]]]:
    errors = []
    if body.trace_id is None and body.span_id is None and body.session_id is None:
        errors.append(
            {"field": "trace_id", "message": "give trace_id, span_id or session_id: the target"}
        )
    data_type = body.data_type or infer_data_type(body.value)
    if data_type is None:
        errors.append({"field": "value", "message": "must be a number, a boolean or a string"})
    else:
        problem_text = check_value(data_type, body.value)
        if problem_text:
            errors.append({"field": "value", "message": problem_text})
    if errors or data_type is None:
        return None, errors
    numeric = data_type in ("numeric", "boolean")
    return (
        Score(
            score_id=body.id or new_trace_id(),
            name=body.name,
            data_type=data_type,
            value=float(body.value) if numeric else None,
            string_value=None if numeric else str(body.value),
            trace_id=body.trace_id,
            span_id=body.span_id,
            session_id=body.session_id,
            source=body.source,
            comment=body.comment,
            author=body.author,
            created_at=time.time(),
        ),
        [],
    )


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(part) for part in error["loc"]) or "body"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["loc"] and error["loc"][0] == "data_type":
            message = f"must be one of {', '.join(DATA_TYPES)}"
        out.append({"field": location.split(".")[0], "message": message})
    return out


async def problem(
    send: Send, status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None
) -> None:
    """Send an RFC 9457 problem document."""
    document: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    document["detail"] = detail
    if errors:
        document["errors"] = errors
    payload = orjson.dumps(document)
    headers = [*_PROBLEM, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
