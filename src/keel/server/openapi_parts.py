"""Small builders shared by the parts of the OpenAPI document (schemas and parameters)."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]

TEXT: JSON = {"type": "string"}
EPOCH: JSON = {"type": "number", "description": "Epoch seconds (UTC)."}


def ref(name: str) -> JSON:
    """A reference to the schema `name` under components."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: JSON) -> JSON:
    """`schema` or null."""
    return {"anyOf": [schema, {"type": "null"}]}


def query(name: str, schema: JSON, description: str, **extra: Any) -> JSON:
    """A query parameter."""
    return {"name": name, "in": "query", "schema": schema, "description": description, **extra}


def path_param(name: str, description: str) -> JSON:
    """A required text path parameter."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": TEXT,
        "description": description,
    }
