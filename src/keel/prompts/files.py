"""Prompt files: YAML in, YAML out, and errors that point at the file, line and field.

`load_prompt_file` reads one `*.yaml` / `*.yml` file into a validated
`PromptTemplate`; a YAML syntax error or a problem in the document becomes a
`PromptFileError` naming the path, the line and the field. `dump_prompt` writes a
document back in the same shape a person would write it (multi-line text as `|`
blocks), which is what `keel prompts pull` and the diffs show.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from keel.core.prompts import InvalidPrompt, PromptTemplate, parse_document

SUFFIXES = (".yaml", ".yml")


class PromptFileError(ValueError):
    """A prompt file that cannot be pushed: `path:line: field: message`."""

    def __init__(self, path: str, line: int | None, field: str | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")
        self.path = path
        self.line = line
        self.field = field


def prompt_files(paths: list[Path]) -> list[Path]:
    """The YAML files among `paths`, folders searched recursively, in a stable order."""
    found: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.suffix in SUFFIXES and child.is_file():
                    found.setdefault(child, None)
        elif path.exists():
            found.setdefault(path, None)
        else:
            raise PromptFileError(str(path), None, None, "no such file or folder")
    return list(found)


def load_prompt_file(path: Path) -> tuple[PromptTemplate, str]:
    """The validated prompt in `path` and the file's text."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptFileError(str(path), None, None, f"cannot be read: {exc}") from None
    return parse_prompt_text(text, str(path)), text


def parse_prompt_text(text: str, path: str = "<text>") -> PromptTemplate:
    """The validated prompt in YAML `text`; PromptFileError points at the first problem."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = exc.problem or str(exc)
        raise PromptFileError(path, line, None, f"not valid YAML: {message}") from None
    except yaml.YAMLError as exc:
        raise PromptFileError(path, None, None, f"not valid YAML: {exc}") from None
    try:
        return parse_document(data)
    except InvalidPrompt as exc:
        first = exc.problems[0]
        more = len(exc.problems) - 1
        message = first.message + (f" (and {more} more: {_rest(exc)})" if more else "")
        raise PromptFileError(path, line_of(node, first.field), first.field, message) from None


def _rest(exc: InvalidPrompt) -> str:
    return "; ".join(str(problem) for problem in exc.problems[1:])


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def line_of(node: yaml.Node | None, field: str) -> int | None:
    """The 1-based line of the YAML node at `field` (`messages[1].content`), or of the
    nearest parent that exists (a missing field is reported where its parent starts)."""
    if node is None:
        return 1
    line = node.start_mark.line + 1
    for key, index in _STEP.findall(field):
        child = _child(node, key, index)
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def _child(node: yaml.Node, key: str, index: str) -> yaml.Node | None:
    if index and isinstance(node, yaml.SequenceNode):
        position = int(index)
        return node.value[position] if position < len(node.value) else None
    if key and isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                return (
                    value_node
                    if value_node.start_mark.line >= key_node.start_mark.line
                    else key_node
                )
    return None


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, like a person writes templates."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value and not any(ch in value for ch in "\r\t") and value == value.rstrip(" "):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_BlockDumper.add_representer(str, _string)


def dump_yaml(data: Any) -> str:
    """YAML for a person to read: keys in the given order, text blocks kept as blocks."""
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=100)


def dump_prompt(template: PromptTemplate) -> str:
    """The prompt as a YAML file (what `keel prompts pull` writes)."""
    return dump_yaml(template.as_document())
