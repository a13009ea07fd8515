"""The prompt registry's REST routes under /api/prompts.

Handlers validate bodies at the edge (pydantic), delegate to `PromptRegistry` and
shape JSON. Registry refusals become problem documents: 404 for an unknown prompt,
version or label (naming it), 409 for a change that contradicts the state (a
rollout already running), 422 for an invalid document or request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from keel.core.prompts import (
    InvalidPrompt,
    parse_document,
    version_summary,
    version_to_json,
)
from keel.core.rollout import LabelEvent, Target
from keel.prompts.registry import PromptRegistry, PushItem, PushOutcome, RegistryError
from keel.server.api_router import ApiProblem, ApiRouter, Request, validated


class LabelMove(Protocol):
    """`PromptRegistry.rollback`, `.promote` or `.abort`."""

    def __call__(self, name: str, label: str, *, actor: str | None) -> LabelEvent: ...


class PushedPrompt(BaseModel):
    """One prompt document to push, as plain data (the YAML file's content)."""

    model_config = ConfigDict(extra="forbid")

    document: dict[str, Any]
    source_path: str | None = Field(default=None, max_length=1000)
    git_commit: str | None = Field(default=None, max_length=64)


class PushBody(BaseModel):
    """`POST /api/prompts/push`."""

    model_config = ConfigDict(extra="forbid")

    prompts: list[PushedPrompt] = Field(min_length=1, max_length=1000)
    author: str | None = Field(default=None, max_length=200)
    message: str | None = Field(default=None, max_length=10_000)
    dry_run: bool = False


class LabelBody(BaseModel):
    """`PUT /api/prompts/{name}/labels/{label}`: point the label at a version."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    actor: str | None = Field(default=None, max_length=200)


class RolloutBody(BaseModel):
    """`POST .../rollout`: give a version a percentage of the label's units."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    weight: float = Field(gt=0, le=100, description="Percent of units, more than 0, at most 100.")
    actor: str | None = Field(default=None, max_length=200)


class ActorBody(BaseModel):
    """Who asks (recorded in the audit log)."""

    model_config = ConfigDict(extra="forbid")

    actor: str | None = Field(default=None, max_length=200)


def targets_json(targets: Sequence[Target]) -> list[dict[str, Any]]:
    """`[{version, weight}]`."""
    return [t.as_dict() for t in targets]


def event_json(event: LabelEvent) -> dict[str, Any]:
    """A label move as JSON."""
    return {
        "id": event.id,
        "label": event.label,
        "action": event.action,
        "from": targets_json(event.before) if event.before is not None else None,
        "to": targets_json(event.after),
        "actor": event.actor,
        "at": event.at,
        "undoes": event.undoes,
    }


def _outcome(outcome: PushOutcome) -> dict[str, Any]:
    return {
        "name": outcome.name,
        "status": outcome.status,
        "version": outcome.version,
        "previous": outcome.previous,
        "diff": outcome.diff,
        "source_path": outcome.source_path,
    }


def _registry_call(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except RegistryError as exc:
        raise ApiProblem(exc.status, exc.title, exc.message) from None


class PromptRoutes:
    """Routes over one `PromptRegistry`."""

    def __init__(self, registry: PromptRegistry) -> None:
        self._registry = registry

    def register(self, router: ApiRouter) -> None:
        """Add these routes to `router`."""
        router.get("/api/prompts", self.list_prompts)
        router.send("POST", "/api/prompts/push", self.push)
        router.get("/api/prompts/{name}", self.prompt)
        router.get("/api/prompts/{name}/versions/{selector}", self.version)
        router.get("/api/prompts/{name}/resolve", self.resolve, ("label", "version"))
        router.get("/api/prompts/{name}/diff", self.diff, ("a", "b"))
        router.get("/api/prompts/{name}/history", self.history, ("limit",))
        router.send("PUT", "/api/prompts/{name}/labels/{label}", self.set_label)
        router.send("POST", "/api/prompts/{name}/labels/{label}/rollback", self.rollback)
        router.send("POST", "/api/prompts/{name}/labels/{label}/rollout", self.rollout)
        router.send("POST", "/api/prompts/{name}/labels/{label}/promote", self.promote)
        router.send("POST", "/api/prompts/{name}/labels/{label}/abort", self.abort)
        router.get("/api/audit", self.audit, ("target", "limit"))

    def list_prompts(self, _request: Request) -> dict[str, Any]:
        return {
            "data": [
                {
                    "name": p.name,
                    "type": p.type,
                    "latest": p.latest,
                    "labels": {label: targets_json(t) for label, t in p.labels.items()},
                    "tags": list(p.tags),
                    "updated_at": p.updated_at,
                }
                for p in self._registry.summaries()
            ]
        }

    def push(self, request: Request) -> dict[str, Any]:
        body = validated(PushBody, request.body)
        items: list[PushItem] = []
        errors: list[dict[str, Any]] = []
        for index, pushed in enumerate(body.prompts):
            try:
                template = parse_document(pushed.document)
            except InvalidPrompt as exc:
                where = pushed.source_path or f"prompts[{index}]"
                errors.extend(
                    {"field": f"prompts[{index}].{p.field}", "message": p.message, "file": where}
                    for p in exc.problems
                )
                continue
            items.append(PushItem(template, pushed.source_path, pushed.git_commit))
        if errors:
            raise ApiProblem(422, "Invalid prompt", "Nothing was pushed.", errors)
        outcomes = _registry_call(
            lambda: self._registry.push(
                items, author=body.author, message=body.message, dry_run=body.dry_run
            )
        )
        return {"dry_run": body.dry_run, "results": [_outcome(o) for o in outcomes]}

    def prompt(self, request: Request) -> dict[str, Any]:
        name = request.path["name"]
        versions = _registry_call(lambda: self._registry.versions(name))
        labels = self._registry.labels(name)
        latest = versions[-1]
        return {
            "name": name,
            "type": latest.template.type,
            "latest": latest.version,
            "labels": {label: targets_json(t) for label, t in labels.items()},
            "versions": [version_summary(v) for v in reversed(versions)],
        }

    def version(self, request: Request) -> dict[str, Any]:
        name, selector = request.path["name"], request.path["selector"]
        found = _registry_call(lambda: self._registry.version(name, selector))
        return version_to_json(found)

    def resolve(self, request: Request) -> dict[str, Any]:
        name = request.path["name"]
        label = request.query.text("label")
        version = request.query.integer("version", default=0, minimum=1, maximum=2**31 - 1)
        if label is not None and version:
            raise ApiProblem(400, "Invalid query", "Give label or version, not both.")
        resolved = _registry_call(
            lambda: self._registry.resolve(name, label=label, version=version or None)
        )
        return {
            "name": resolved.name,
            "label": resolved.label,
            "targets": targets_json(resolved.targets),
            "versions": {str(n): version_to_json(v) for n, v in resolved.versions.items()},
            "included": {ref: version_to_json(v) for ref, v in resolved.included.items()},
        }

    def diff(self, request: Request) -> dict[str, Any]:
        name = request.path["name"]
        a = request.query.text("a") or "production"
        b = request.query.text("b") or "latest"
        return {"a": a, "b": b, "diff": _registry_call(lambda: self._registry.diff(name, a, b))}

    def history(self, request: Request) -> dict[str, Any]:
        name = request.path["name"]
        limit = request.query.integer("limit", default=500, minimum=1, maximum=5000)
        events = _registry_call(lambda: self._registry.history(name, limit))
        return {"data": [e.as_dict() for e in events]}

    def set_label(self, request: Request) -> dict[str, Any]:
        name, label = request.path["name"], request.path["label"]
        body = validated(LabelBody, request.body)
        event = _registry_call(
            lambda: self._registry.set_label(name, label, body.version, actor=body.actor)
        )
        return event_json(event)

    def rollout(self, request: Request) -> dict[str, Any]:
        name, label = request.path["name"], request.path["label"]
        body = validated(RolloutBody, request.body)
        event = _registry_call(
            lambda: self._registry.rollout(name, label, body.version, body.weight, actor=body.actor)
        )
        return event_json(event)

    def rollback(self, request: Request) -> dict[str, Any]:
        return self._actor_move(request, self._registry.rollback)

    def promote(self, request: Request) -> dict[str, Any]:
        return self._actor_move(request, self._registry.promote)

    def abort(self, request: Request) -> dict[str, Any]:
        return self._actor_move(request, self._registry.abort)

    def _actor_move(self, request: Request, move: LabelMove) -> dict[str, Any]:
        """A label move that needs nothing but who asks: rollback, promote, abort."""
        name, label = request.path["name"], request.path["label"]
        body = validated(ActorBody, request.body)
        return event_json(_registry_call(lambda: move(name, label, actor=body.actor)))

    def audit(self, request: Request) -> dict[str, Any]:
        target = request.query.text("target")
        limit = request.query.integer("limit", default=100, minimum=1, maximum=5000)
        return {"data": [e.as_dict() for e in self._registry.audit_events(target, limit)]}
