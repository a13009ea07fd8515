"""The REST API of datasets under /api/datasets: list, push, versions, items, from traces.

Handlers validate the body at the edge (pydantic, unknown fields refused), turn it into
the dataset service's terms and shape the answer. Items are checked by the service's
own rules (`keel.evals.datasets.parse_items`), so a push from the CLI and one from any
other client get the same errors: a 422 whose `errors[].field` names the item and field
(`items[3].input`). `POST /api/datasets` reads bodies up to `PUSH_BODY_LIMIT` (a dataset
with its context documents outgrows the API's usual 4 MiB), parsing and storing in a
worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field

from keel.core.datasets import item_to_json
from keel.core.errors import GatewayError
from keel.evals.datasets import (
    DatasetError,
    DatasetService,
    InvalidItems,
    PushOutcome,
    parse_items,
)
from keel.ports import DatasetVersionInfo
from keel.server.api_router import (
    ApiProblem,
    ApiRouter,
    BadParameter,
    Request,
    encode_cursor,
    validated,
)
from keel.server.api_scores import problem
from keel.server.api_traces import score_filter
from keel.server.asgi import ClientGone, Receive, Scope, Send, header_map, read_body, send_bytes
from keel.store.queries import TraceFilter
from keel.store.trace_selection import TraceSelector

T = TypeVar("T")
log = logging.getLogger("keel.server.api")

PUSH_BODY_LIMIT = 64 * 1024 * 1024
ITEMS_LIMIT = {"default": 1000, "minimum": 1, "maximum": 10_000}
MAX_VERSION = 2**31 - 1


class DatasetPushBody(BaseModel):
    """`POST /api/datasets`: the items of the dataset's next version."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    items: list[Any] = Field(
        min_length=1,
        description="Each an object: input (a text, or an object of prompt variables), and "
        "optionally id, expected, context (texts or {id, text}) and metadata.",
    )
    message: str | None = Field(default=None, max_length=10_000)
    source: str | None = Field(
        default=None, max_length=1000, description="The file the items came from."
    )
    author: str | None = Field(default=None, max_length=200)
    dry_run: bool = False


class FromTracesBody(BaseModel):
    """`POST /api/datasets/{name}/from-traces`: the filters of GET /api/traces, a prompt."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: float | datetime = Field(
        alias="from", description="Window start: epoch seconds or ISO 8601 (UTC unless given)."
    )
    to: float | datetime | None = Field(default=None, description="Window end (default: now).")
    name: str | None = Field(default=None, max_length=1000, description="The root span's name.")
    user: str | None = Field(default=None, max_length=1000)
    session: str | None = Field(default=None, max_length=1000)
    tag: list[str] = Field(default_factory=list, description="Every tag must be on the trace.")
    model: str | None = Field(default=None, max_length=1000)
    status: Literal["ok", "error"] | None = None
    min_latency_ms: float | None = Field(default=None, ge=0)
    min_cost: float | None = Field(default=None, ge=0)
    score: list[str] = Field(
        default_factory=list,
        description="`name:operator:value` as in GET /api/traces, e.g. `thumbs:eq:false`.",
    )
    q: str | None = Field(default=None, max_length=1000, description="Text in an input/output.")
    prompt: str | None = Field(
        default=None, max_length=100, description="Some span used this registry prompt."
    )
    prompt_version: int | None = Field(default=None, ge=1, description="... at this version.")
    limit: int = Field(default=100, ge=1, le=10_000, description="The newest traces, at most.")
    expected_from_output: bool = Field(
        default=False, description="Each item's expected answer is the trace's output."
    )
    append: bool = Field(
        default=False,
        description="Keep the newest version's items and add the traces' after them.",
    )
    message: str | None = Field(default=None, max_length=10_000)
    author: str | None = Field(default=None, max_length=200)
    dry_run: bool = False


def dataset_call(call: Callable[[], T]) -> T:
    """`call()`, with the dataset service's refusals as problem documents."""
    try:
        return call()
    except InvalidItems as exc:
        errors = [
            {"field": f"{p.where}.{p.field}" if p.field else p.where, "message": p.message}
            for p in exc.problems
        ]
        raise ApiProblem(exc.status, exc.title, exc.message, errors) from None
    except DatasetError as exc:
        raise ApiProblem(exc.status, exc.title, exc.message) from None


def info_json(info: DatasetVersionInfo) -> dict[str, Any]:
    """A version's header."""
    return {
        "name": info.name,
        "version": info.version,
        "item_count": info.item_count,
        "content_hash": info.content_hash,
        "created_at": info.created_at,
        "author": info.author,
        "message": info.message,
        "source": info.source,
    }


def outcome_json(outcome: PushOutcome, dry_run: bool) -> dict[str, Any]:
    """What a push did."""
    return {
        "name": outcome.name,
        "status": outcome.status,
        "version": outcome.version,
        "previous": outcome.previous,
        "item_count": outcome.item_count,
        "content_hash": outcome.content_hash,
        "added": outcome.added,
        "removed": outcome.removed,
        "changed": outcome.changed,
        "dry_run": dry_run,
    }


class DatasetRoutes:
    """Routes over one `DatasetService` (and the trace selection for from-traces)."""

    def __init__(
        self,
        datasets: DatasetService,
        selector: TraceSelector,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._datasets = datasets
        self._selector = selector
        self._clock = clock

    def register(self, router: ApiRouter) -> None:
        """Add these routes to `router`."""
        router.get("/api/datasets", self.list_datasets)
        router.mount("POST", "/api/datasets", self.push)
        router.get("/api/datasets/{name}", self.dataset, ("version",))
        router.get("/api/datasets/{name}/versions", self.versions)
        router.get("/api/datasets/{name}/items", self.items, ("version", "limit", "cursor"))
        router.send("POST", "/api/datasets/{name}/from-traces", self.from_traces)

    def list_datasets(self, _request: Request) -> dict[str, Any]:
        return {
            "data": [
                {
                    "name": info.name,
                    "latest": info.version,
                    "item_count": info.item_count,
                    "content_hash": info.content_hash,
                    "updated_at": info.created_at,
                    "author": info.author,
                    "message": info.message,
                }
                for info in self._datasets.summaries()
            ]
        }

    async def push(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`POST /api/datasets`, read up to PUSH_BODY_LIMIT bytes."""
        try:
            raw = await read_body(receive, header_map(scope), PUSH_BODY_LIMIT)
        except ClientGone:
            return
        except GatewayError as exc:
            await problem(send, 413, "Payload Too Large", exc.message)
            return
        try:
            payload = await asyncio.to_thread(self._push, raw)
        except ApiProblem as exc:
            await problem(send, exc.status, exc.title, exc.detail, exc.errors)
        except Exception:
            log.exception("POST /api/datasets failed")
            await problem(send, 500, "Internal Server Error", "The push failed; see the log.")
        else:
            await send_bytes(send, 200, payload)

    def _push(self, raw: bytes) -> bytes:
        try:
            document = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise ApiProblem(400, "Invalid JSON", f"The body is not valid JSON: {exc}") from None
        body = validated(DatasetPushBody, document)
        outcome = dataset_call(
            lambda: self._datasets.push(
                body.name,
                parse_items((f"items[{i}]", doc) for i, doc in enumerate(body.items)),
                author=body.author,
                message=body.message,
                source=body.source,
                dry_run=body.dry_run,
            )
        )
        return orjson.dumps(outcome_json(outcome, body.dry_run))

    def dataset(self, request: Request) -> dict[str, Any]:
        name = request.path["name"]
        version = request.query.integer("version", default=0, minimum=1, maximum=MAX_VERSION)
        info = dataset_call(lambda: self._datasets.info(name, version or None))
        latest = info if not version else dataset_call(lambda: self._datasets.info(name))
        return {**info_json(info), "latest": latest.version}

    def versions(self, request: Request) -> dict[str, Any]:
        name = request.path["name"]
        versions = dataset_call(lambda: self._datasets.versions(name))
        return {"name": name, "data": [info_json(v) for v in reversed(versions)]}

    def items(self, request: Request) -> dict[str, Any]:
        query = request.query
        name = request.path["name"]
        version = query.integer("version", default=0, minimum=1, maximum=MAX_VERSION)
        info = dataset_call(lambda: self._datasets.info(name, version or None))
        limit = query.integer("limit", **ITEMS_LIMIT)
        kind = f"items of v{info.version}"
        after = query.cursor(kind)
        page = self._datasets.items(
            name, info.version, after=-1 if after is None else int(after[0]), limit=limit + 1
        )
        more = len(page) > limit
        page = page[:limit]
        last = page[-1] if more else None
        return {
            "name": name,
            "version": info.version,
            "item_count": info.item_count,
            "data": [item_to_json(item) for _, item in page],
            "next_cursor": last and encode_cursor(kind, (float(last[0]), last[1].id)),
        }

    def from_traces(self, request: Request) -> dict[str, Any]:
        name = request.path["name"]
        body = validated(FromTracesBody, request.body)
        start, end = _epoch(body.from_), _epoch(body.to) if body.to is not None else self._clock()
        if end < start:
            raise ApiProblem(422, "Invalid request", "'to' is before 'from'.", [
                {"field": "to", "message": "is before 'from': the window is inverted"}
            ])  # fmt: skip
        try:
            where = TraceFilter(
                name=body.name,
                user=body.user,
                session=body.session,
                tags=tuple(body.tag),
                model=body.model,
                status=body.status,
                min_latency_ms=body.min_latency_ms,
                min_cost=body.min_cost,
                scores=tuple(score_filter(text) for text in body.score),
                text=body.q,
            )
        except BadParameter as exc:
            raise ApiProblem(422, "Invalid request", str(exc), [
                {"field": exc.parameter, "message": exc.message}
            ]) from None  # fmt: skip
        roots = self._selector.roots(
            (start, end), where, body.limit, prompt=body.prompt, prompt_version=body.prompt_version
        )
        selection = body.model_dump(
            mode="json",
            by_alias=True,
            exclude_defaults=True,
            exclude={"expected_from_output", "append", "message", "author", "dry_run"},
        )
        selection.update({"from": start, "to": end})
        outcome = dataset_call(
            lambda: self._datasets.push_traces(
                name,
                roots,
                selection=selection,
                expected_from_output=body.expected_from_output,
                append=body.append,
                author=body.author,
                message=body.message,
                dry_run=body.dry_run,
            )
        )
        return {
            **outcome_json(outcome.push, body.dry_run),
            "traces": outcome.traces,
            "without_input": outcome.without_input,
            "duplicates": outcome.duplicates,
            "kept": outcome.kept,
        }


def _epoch(value: float | datetime) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)
