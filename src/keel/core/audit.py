"""The audit log's record: who did what to which thing, when, and what changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One change, as stored. `target` names the thing (a prompt's name); `detail` holds
    what changed, such as `{"label": "production", "from": ..., "to": ...}`."""

    action: str
    target: str
    at: float
    actor: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return {
            "id": self.id,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
        }
