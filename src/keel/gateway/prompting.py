"""Chat requests that name a prompt instead of sending messages.

`{"prompt": {"name": "rag_qa", "label": "production", "variables": {...}}}` (the
OpenAI client sends it with `extra_body`) is resolved through the prompt cache,
the version for the request's unit is picked (the user, else the session, else
the request), rendered, and its model config applied under the request's own
fields: a field the request sets wins. Messages the request sends as well follow
the prompt's (a conversation continuing after the prompt's system message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keel.core.errors import GatewayError
from keel.core.templates import RenderError
from keel.prompts.cache import PromptCache
from keel.prompts.registry import PromptNotFound, RegistryError

_REFERENCE_FIELDS = frozenset(("name", "label", "version", "variables"))


@dataclass(frozen=True, slots=True)
class PromptUse:
    """Which prompt version served a call (recorded on its span)."""

    name: str
    version: int
    label: str | None

    def attributes(self) -> dict[str, Any]:
        """Span attributes naming the prompt version."""
        out: dict[str, Any] = {"keel.prompt.name": self.name, "keel.prompt.version": self.version}
        if self.label is not None:
            out["keel.prompt.label"] = self.label
        return out


class PromptApplier:
    """Turns a request's prompt reference into messages and request fields."""

    def __init__(self, cache: PromptCache) -> None:
        self._cache = cache

    async def apply(self, body: dict[str, Any], unit: str) -> PromptUse:
        """Render the prompt `body["prompt"]` names into `body` for `unit`."""
        reference = body.pop("prompt")
        key, variables = _reference(reference)
        entry = self._cache.peek(key)
        if entry is None:
            try:
                entry = await self._cache.get(key)
            except PromptNotFound as exc:
                raise GatewayError(
                    404, exc.message, code="prompt_not_found", param="prompt"
                ) from None
            except RegistryError as exc:
                raise GatewayError(
                    400, exc.message, code="invalid_prompt", param="prompt"
                ) from None
        version = entry.pick(unit)
        try:
            rendered = entry.renderers[version].render(variables)
        except RenderError as exc:
            param = f"prompt.variables.{exc.variable}" if exc.variable else "prompt"
            raise GatewayError(
                400, f"Prompt {entry.name} v{version}: {exc}", code="invalid_prompt", param=param
            ) from None
        template = entry.templates[version]
        messages = (
            rendered if isinstance(rendered, list) else [{"role": "user", "content": rendered}]
        )
        extra = body.get("messages")
        if isinstance(extra, list):
            messages = [*messages, *extra]
        body["messages"] = messages
        for name, value in template.params.items():
            body.setdefault(name, value)
        if "model" not in body:
            if template.alias is None:
                raise GatewayError(
                    400,
                    f"Prompt {entry.name} v{version} names no model alias; send 'model'.",
                    param="model",
                )
            body["model"] = template.alias
        return PromptUse(entry.name, version, entry.label)


def _reference(raw: Any) -> tuple[tuple[str, str | None, int | None], dict[str, Any]]:
    if not isinstance(raw, dict):
        raise GatewayError(
            400,
            '\'prompt\' must be an object such as {"name": "rag_qa", "label": '
            '"production", "variables": {...}}.',
            param="prompt",
        )
    for field in raw:
        if field not in _REFERENCE_FIELDS:
            raise GatewayError(
                400,
                f"Unknown field prompt.{field}; use name, label, version, variables.",
                param=f"prompt.{field}",
            )
    name, label, version = raw.get("name"), raw.get("label"), raw.get("version")
    variables = raw.get("variables", {})
    if not isinstance(name, str) or not name:
        raise GatewayError(400, "'prompt.name' must be a prompt's name.", param="prompt.name")
    if label is not None and (not isinstance(label, str) or not label):
        raise GatewayError(400, "'prompt.label' must be a label's name.", param="prompt.label")
    if version is not None and (
        not isinstance(version, int) or isinstance(version, bool) or version < 1
    ):
        raise GatewayError(
            400, "'prompt.version' must be a version number.", param="prompt.version"
        )
    if label is not None and version is not None:
        raise GatewayError(
            400, "Give prompt.label or prompt.version, not both.", param="prompt.version"
        )
    if not isinstance(variables, dict):
        raise GatewayError(400, "'prompt.variables' must be an object.", param="prompt.variables")
    if version is None and label is None:
        label = "production"
    return (name, label, version), variables
