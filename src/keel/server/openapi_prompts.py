"""The prompt registry's part of the OpenAPI document: paths and schemas under /api/prompts.

Request bodies come from the pydantic models the handlers validate with, so the
document cannot disagree with them.
"""

from __future__ import annotations

from keel.server.api_prompts import ActorBody, LabelBody, PushBody, RolloutBody
from keel.server.openapi_parts import EPOCH, JSON, TEXT, nullable, path_param, query, ref

_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
_STATUS_TEXT = {
    400: "The query is wrong.",
    401: "The master key is configured and was not sent.",
    404: "No such prompt, version or label; the detail names it.",
    409: "The change contradicts the label's state (e.g. another rollout is running).",
    413: "The body is too large.",
    422: "The body is invalid; errors[].field names what is wrong.",
}


_NAME = path_param("name", "The prompt's name.")
_LABEL = path_param("label", "The label's name (production, staging, ...).")


def _operation(
    operation_id: str,
    summary: str,
    ok: JSON,
    *problems: int,
    parameters: list[JSON] | None = None,
    body: str | None = None,
) -> JSON:
    responses: JSON = {
        "200": {"description": "OK.", "content": {"application/json": {"schema": ok}}}
    }
    for status in (401, *problems):
        responses[str(status)] = {"description": _STATUS_TEXT[status], "content": _PROBLEM}
    operation: JSON = {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["prompts"],
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if body:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(body)}},
        }
    return operation


def _label_move(operation_id: str, summary: str, body: str, *problems: int) -> JSON:
    return {
        "post": _operation(
            operation_id,
            summary,
            ref("LabelEvent"),
            404,
            422,
            *problems,
            parameters=[_NAME, _LABEL],
            body=body,
        )
    }


def prompt_paths() -> JSON:
    """The /api/prompts paths and /api/audit."""
    return {
        "/api/prompts": {
            "get": _operation(
                "listPrompts",
                "Every prompt with its newest version and labels.",
                ref("PromptList"),
            )
        },
        "/api/prompts/push": {
            "post": _operation(
                "pushPrompts",
                "Register each changed document as a new immutable version (or, with "
                "dry_run, show what would change). Includes are pinned to versions; an "
                "identical document creates no version.",
                ref("PushResult"),
                404,
                413,
                422,
                body="PushBody",
            )
        },
        "/api/prompts/{name}": {
            "get": _operation(
                "getPrompt",
                "A prompt: its labels and versions, newest first.",
                ref("Prompt"),
                404,
                parameters=[_NAME],
            )
        },
        "/api/prompts/{name}/versions/{selector}": {
            "get": _operation(
                "getPromptVersion",
                "One version by number or by a label on one version.",
                ref("PromptVersion"),
                404,
                409,
                parameters=[_NAME, path_param("selector", "A version number or a label.")],
            )
        },
        "/api/prompts/{name}/resolve": {
            "get": _operation(
                "resolvePrompt",
                "What the SDK caches: the label's targets (weights during a rollout), every "
                "version they name and every prompt those include. Default: production.",
                ref("ResolvedPrompt"),
                400,
                404,
                parameters=[
                    _NAME,
                    query("label", TEXT, "A label (default production)."),
                    query("version", {"type": "integer", "minimum": 1}, "A version instead."),
                ],
            )
        },
        "/api/prompts/{name}/diff": {
            "get": _operation(
                "diffPrompt",
                "A unified diff of two versions: templates and config.",
                ref("PromptDiff"),
                400,
                404,
                409,
                parameters=[
                    _NAME,
                    query("a", TEXT, "A version or label (default production)."),
                    query("b", TEXT, "A version or label (default latest)."),
                ],
            )
        },
        "/api/prompts/{name}/history": {
            "get": _operation(
                "promptHistory",
                "Pushes and label moves of a prompt, oldest first.",
                ref("AuditList"),
                400,
                404,
                parameters=[
                    _NAME,
                    query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 5000},
                        "How many events.",
                    ),
                ],
            )
        },
        "/api/prompts/{name}/labels/{label}": {
            "put": _operation(
                "setPromptLabel",
                "Point a label at one version (ends a rollout on it).",
                ref("LabelEvent"),
                404,
                422,
                parameters=[_NAME, _LABEL],
                body="LabelBody",
            )
        },
        "/api/prompts/{name}/labels/{label}/rollback": _label_move(
            "rollbackPromptLabel",
            "Move a label back to where it pointed before its last move.",
            "ActorBody",
            409,
        ),
        "/api/prompts/{name}/labels/{label}/rollout": _label_move(
            "rolloutPromptLabel",
            "Give a version a percentage of the label's units (users, else sessions, else "
            "requests); the rest stay on the version the label serves.",
            "RolloutBody",
            409,
        ),
        "/api/prompts/{name}/labels/{label}/promote": _label_move(
            "promotePromptLabel",
            "End a rollout: the new version takes every unit.",
            "ActorBody",
            409,
        ),
        "/api/prompts/{name}/labels/{label}/abort": _label_move(
            "abortPromptLabel",
            "End a rollout: every unit goes back.",
            "ActorBody",
            409,
        ),
        "/api/audit": {
            "get": _operation(
                "listAuditEvents",
                "The audit log, oldest first of the newest `limit`.",
                ref("AuditList"),
                400,
                parameters=[
                    query("target", TEXT, "Only events of this target (a prompt's name)."),
                    query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 5000},
                        "How many events.",
                    ),
                ],
            )
        },
    }


def prompt_schemas() -> dict[str, JSON]:
    """The schemas the prompt paths refer to."""
    targets = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"version": {"type": "integer"}, "weight": {"type": "number"}},
            "required": ["version", "weight"],
        },
        "description": "The versions a label serves; weights are percent and add up to 100.",
    }
    labels = {"type": "object", "additionalProperties": targets}
    version_summary: JSON = {
        "type": "object",
        "properties": {
            "version": {"type": "integer"},
            "content_hash": TEXT,
            "author": nullable(TEXT),
            "message": nullable(TEXT),
            "source_path": nullable(TEXT),
            "git_commit": nullable(TEXT),
            "created_at": EPOCH,
        },
    }
    version = {
        "type": "object",
        "properties": {
            **version_summary["properties"],
            "name": TEXT,
            "type": {"type": "string", "enum": ["chat", "text"]},
            "document": {"type": "object", "description": "The prompt document (the YAML)."},
            "pins": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "Each include reference and the version it is pinned to.",
            },
        },
    }
    audit = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "at": EPOCH,
            "actor": nullable(TEXT),
            "action": {**TEXT, "description": "prompt.push, prompt.label.set, ..."},
            "target": TEXT,
            "detail": {"type": "object", "description": "What changed: {label, from, to}..."},
        },
    }
    bodies: dict[str, JSON] = {}
    for model in (PushBody, LabelBody, RolloutBody, ActorBody):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        bodies.update(schema.pop("$defs", {}))
        bodies[model.__name__] = schema
    return {
        **bodies,
        "PromptTargets": targets,
        "PromptList": {
            "type": "object",
            "properties": {
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": TEXT,
                            "type": TEXT,
                            "latest": {"type": "integer"},
                            "labels": labels,
                            "tags": {"type": "array", "items": TEXT},
                            "updated_at": EPOCH,
                        },
                    },
                }
            },
        },
        "Prompt": {
            "type": "object",
            "properties": {
                "name": TEXT,
                "type": TEXT,
                "latest": {"type": "integer"},
                "labels": labels,
                "versions": {"type": "array", "items": version_summary},
            },
        },
        "PromptVersion": version,
        "ResolvedPrompt": {
            "type": "object",
            "properties": {
                "name": TEXT,
                "label": nullable(TEXT),
                "targets": targets,
                "versions": {"type": "object", "additionalProperties": version},
                "included": {"type": "object", "additionalProperties": version},
            },
        },
        "PushResult": {
            "type": "object",
            "properties": {
                "dry_run": {"type": "boolean"},
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": TEXT,
                            "status": {"type": "string", "enum": ["created", "unchanged"]},
                            "version": {"type": "integer"},
                            "previous": nullable({"type": "integer"}),
                            "diff": {**TEXT, "description": "Unified diff from previous."},
                            "source_path": nullable(TEXT),
                        },
                    },
                },
            },
        },
        "PromptDiff": {
            "type": "object",
            "properties": {"a": TEXT, "b": TEXT, "diff": TEXT},
        },
        "LabelEvent": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "label": TEXT,
                "action": {
                    "type": "string",
                    "enum": ["set", "rollback", "rollout", "promote", "abort", "push"],
                },
                "from": nullable(targets),
                "to": targets,
                "actor": nullable(TEXT),
                "at": EPOCH,
                "undoes": nullable({"type": "integer"}),
            },
        },
        "AuditList": {
            "type": "object",
            "properties": {"data": {"type": "array", "items": audit}},
        },
    }
