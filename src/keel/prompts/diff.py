"""Diffs of prompt versions: the YAML a person wrote, line by line, plus include pins."""

from __future__ import annotations

import difflib

from keel.core.prompts import PromptVersion
from keel.prompts.files import dump_yaml


def version_text(version: PromptVersion | None) -> list[str]:
    """The lines a diff compares: the document as YAML, then the pinned includes."""
    if version is None:
        return []
    text = dump_yaml(version.template.as_document())
    if version.pins:
        text += dump_yaml({"includes (pinned)": dict(sorted(version.pins.items()))})
    return text.splitlines(keepends=True)


def diff_versions(a: PromptVersion | None, b: PromptVersion) -> str:
    """A unified diff from `a` (None: nothing yet) to `b`; empty when they read the same."""
    before = f"{a.ref}" if a is not None else "/dev/null"
    return "".join(
        difflib.unified_diff(version_text(a), version_text(b), fromfile=before, tofile=b.ref)
    )
