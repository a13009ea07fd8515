"""The gateway's prompt cache: labels resolved and compiled once, forgotten when they move.

A request that names a prompt finds it here with a dictionary lookup: no database
read, no template compilation. A miss resolves the label through the registry in
a worker thread and compiles every version it serves. Writes made through this
process call `forget(name)` at once (the registry's `on_change`); `follow` polls
the registry's revision so that pushes and label moves made by another process
(a second replica, a CLI writing to the database) are noticed within `interval_s`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from keel.core.prompts import PromptTemplate
from keel.core.rollout import Target, assign, rollout_salt
from keel.core.templates import PromptRenderer
from keel.prompts.registry import PromptRegistry

log = logging.getLogger("keel.prompts")

Key = tuple[str, str | None, int | None]


@dataclass(frozen=True, slots=True)
class CompiledLabel:
    """A label (or one version) ready to serve: who gets which version, compiled."""

    name: str
    label: str | None
    targets: tuple[Target, ...]
    salt: str
    renderers: dict[int, PromptRenderer]
    templates: dict[int, PromptTemplate]

    def pick(self, unit: str) -> int:
        """The version `unit` (a user, session or request id) is served."""
        return assign(self.targets, self.salt, unit)


class PromptCache:
    """Compiled labels by (name, label, version); see the module docstring."""

    def __init__(self, registry: PromptRegistry, *, max_entries: int = 4096) -> None:
        self._registry = registry
        self._entries: dict[Key, CompiledLabel] = {}
        self._max_entries = max_entries
        self._revision: int | None = None

    def peek(self, key: Key) -> CompiledLabel | None:
        """The cached entry for `key`, or None (no I/O)."""
        return self._entries.get(key)

    async def get(self, key: Key) -> CompiledLabel:
        """The entry for `key`, resolving and compiling it on a miss (RegistryError if unknown)."""
        entry = self._entries.get(key)
        if entry is None:
            entry = await asyncio.to_thread(self.load, key)
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[key] = entry
        return entry

    def load(self, key: Key) -> CompiledLabel:
        """Resolve and compile `key` (blocking)."""
        name, label, version = key
        resolved = self._registry.resolve(name, label=label, version=version)
        renderers = {
            number: PromptRenderer(found, resolved.included)
            for number, found in resolved.versions.items()
        }
        templates = {number: found.template for number, found in resolved.versions.items()}
        salt = rollout_salt(name, label or "", resolved.targets)
        return CompiledLabel(name, resolved.label, resolved.targets, salt, renderers, templates)

    def forget(self, name: str) -> None:
        """Drop every entry of `name` and of prompts that may include it (after a change)."""
        # An include pins a version, but a label of an including prompt may move with it;
        # prompts are few, so forgetting everything is simplest and always right.
        del name
        self._entries.clear()

    async def follow(self, interval_s: float) -> None:
        """Forget everything whenever the registry's revision changes (runs until cancelled)."""
        while True:
            try:
                revision = await asyncio.to_thread(self._registry.revision)
            except Exception:
                log.exception("reading the prompt registry's revision failed")
            else:
                if self._revision is not None and revision != self._revision:
                    self._entries.clear()
                self._revision = revision
            await asyncio.sleep(interval_s)
