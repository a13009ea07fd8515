"""Prompts as data: the prompt document, its validation, its content hash and its versions.

A prompt document is what a team keeps in git as YAML (`prompts/rag_qa.yaml`):
a name, a type (`chat`: a list of messages; `text`: one template), the variables
its templates use, the model config to call it with, metadata and tags. The
registry stores each distinct document as an immutable `PromptVersion`.

`parse_document` turns the plain data of a document into a `PromptTemplate` or
a list of `Problem`s, each naming the field (`messages[1].content`) so the file
loader can point at the line. Templates are checked here too: a template that
uses a variable the document does not declare is an error naming it, so a typo
is caught at push time rather than at the first request.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from keel.core.templates import (
    TemplateProblem,
    Variable,
    template_names,
    type_name,
    type_problem,
)

PROMPT_TYPES = ("chat", "text")
ROLES = ("system", "developer", "user", "assistant", "tool")
VARIABLE_TYPES = ("string", "number", "integer", "boolean", "array", "object")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
LABEL_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,49}$")
# Request fields a prompt's `model` section may set besides the alias.
MODEL_FIELDS = frozenset(
    (
        "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "n",
        "presence_penalty", "frequency_penalty", "response_format", "tools", "tool_choice",
        "logprobs", "top_logprobs", "reasoning_effort", "parallel_tool_calls",
    )
)  # fmt: skip
_DOCUMENT_FIELDS = (
    "name", "type", "description", "messages", "template", "variables", "model",
    "metadata", "tags",
)  # fmt: skip
_VARIABLE_FIELDS = ("type", "required", "default", "description")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a prompt document: the field's path and what to write instead."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidPrompt(ValueError):
    """A prompt document with problems; `problems` lists every one."""

    def __init__(self, name: str, problems: list[Problem]) -> None:
        super().__init__(f"prompt {name!r}: " + "; ".join(str(p) for p in problems))
        self.name = name
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message template."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """A validated prompt document (the content of a version)."""

    name: str
    type: str
    messages: tuple[Message, ...] = ()
    template: str | None = None
    variables: dict[str, Variable] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    description: str | None = None

    def templates(self) -> list[tuple[str, str]]:
        """(field path, template source) of every template in the document."""
        if self.type == "text":
            return [("template", self.template or "")]
        return [(f"messages[{i}].content", m.content) for i, m in enumerate(self.messages)]

    def includes(self) -> list[str]:
        """The prompt references its templates include, in order of first use."""
        seen: dict[str, None] = {}
        for _, source in self.templates():
            for name in template_names(source).includes:
                seen.setdefault(name, None)
        return list(seen)

    def as_document(self) -> dict[str, Any]:
        """The document as plain data, keys in file order, empty sections left out."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.description is not None:
            out["description"] = self.description
        if self.type == "chat":
            out["messages"] = [{"role": m.role, "content": m.content} for m in self.messages]
        else:
            out["template"] = self.template
        if self.variables:
            out["variables"] = {
                name: _variable_document(variable) for name, variable in self.variables.items()
            }
        if self.model:
            out["model"] = dict(self.model)
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        if self.tags:
            out["tags"] = list(self.tags)
        return out

    @property
    def alias(self) -> str | None:
        """The model alias the prompt is meant for, if it names one."""
        alias = self.model.get("alias")
        return alias if isinstance(alias, str) else None

    @property
    def params(self) -> dict[str, Any]:
        """The request fields the prompt's model config sets (everything but the alias)."""
        return {k: v for k, v in self.model.items() if k != "alias"}


def _variable_document(variable: Variable) -> dict[str, Any]:
    out: dict[str, Any] = {"type": variable.type, "required": variable.required}
    if variable.default is not None:
        out["default"] = variable.default
    if variable.description is not None:
        out["description"] = variable.description
    return out


def content_hash(template: PromptTemplate, pins: dict[str, int]) -> str:
    """SHA-256 of the document's canonical JSON and the versions its includes are pinned to.

    Key order and YAML style do not matter; any change to a template, a variable, the
    model config, metadata, tags, or an included prompt's version does.
    """
    canonical = orjson.dumps(
        {"document": template.as_document(), "includes": pins}, option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True, slots=True)
class PromptVersion:
    """One immutable version of a prompt, as the registry stores it.

    `pins` maps each include reference written in a template (`"safety"`) to the
    version of that prompt it was pinned to at push time, so what a version renders
    never changes afterwards.
    """

    name: str
    version: int
    template: PromptTemplate
    content_hash: str
    pins: dict[str, int]
    created_at: float
    author: str | None = None
    message: str | None = None
    source_path: str | None = None
    git_commit: str | None = None

    @property
    def ref(self) -> str:
        """`name@version`."""
        return f"{self.name}@{self.version}"


def split_reference(reference: str) -> tuple[str, int | None]:
    """`"safety"` -> ("safety", None); `"safety@3"` -> ("safety", 3); ValueError otherwise."""
    name, at, version = reference.partition("@")
    if not NAME_PATTERN.match(name):
        raise ValueError(f"{reference!r} is not a prompt name")
    if not at:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise ValueError(
            f"{reference!r}: include a prompt by name, or pin a version with name@N "
            "(labels move, so an include cannot follow one)"
        )
    return name, int(version)


def parse_document(data: Any) -> PromptTemplate:
    """Validate a prompt document given as plain data; InvalidPrompt lists every problem."""
    problems: list[Problem] = []
    if not isinstance(data, dict):
        raise InvalidPrompt("?", [Problem("document", "must be a mapping with name, type, ...")])
    name = data.get("name")
    for key in data:
        if key not in _DOCUMENT_FIELDS:
            problems.append(Problem(str(key), _unknown(str(key), _DOCUMENT_FIELDS)))
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.append(
            Problem("name", "required: letters, digits, '_', '.', '-' (up to 100 characters)")
        )
        name = name if isinstance(name, str) else "?"
    kind = data.get("type", "text" if "template" in data else "chat")
    if kind not in PROMPT_TYPES:
        problems.append(Problem("type", f"must be chat or text (got {kind!r})"))
        kind = "chat"
    messages = _messages(data, kind, problems)
    template = _template(data, kind, problems)
    variables = _variables(data.get("variables"), problems)
    model = _mapping(data, "model", problems)
    for key, value in model.items():
        if key == "alias":
            if not isinstance(value, str) or not value:
                problems.append(Problem("model.alias", "must be a model alias (a string)"))
        elif key not in MODEL_FIELDS:
            problems.append(Problem(f"model.{key}", _unknown(key, ("alias", *MODEL_FIELDS))))
    metadata = _mapping(data, "metadata", problems)
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        problems.append(Problem("tags", "must be a list of strings"))
        tags = []
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        problems.append(Problem("description", "must be a string"))
        description = None
    prompt = PromptTemplate(
        name=name,
        type=kind,
        messages=tuple(messages),
        template=template,
        variables=variables,
        model=model,
        metadata=metadata,
        tags=tuple(tags),
        description=description,
    )
    problems.extend(_template_problems(prompt))
    if problems:
        raise InvalidPrompt(name, problems)
    return prompt


def _messages(data: dict[str, Any], kind: str, problems: list[Problem]) -> list[Message]:
    raw = data.get("messages")
    if kind == "text":
        if raw is not None:
            problems.append(Problem("messages", "a text prompt has a template, not messages"))
        return []
    if not isinstance(raw, list) or not raw:
        problems.append(Problem("messages", "a chat prompt needs a list of messages"))
        return []
    messages = []
    for index, item in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            problems.append(Problem(where, "must be a mapping with role and content"))
            continue
        for key in item:
            if key not in ("role", "content"):
                problems.append(Problem(f"{where}.{key}", _unknown(str(key), ("role", "content"))))
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            problems.append(Problem(f"{where}.role", f"must be one of {', '.join(ROLES)}"))
        if not isinstance(content, str):
            problems.append(Problem(f"{where}.content", "must be a string (the message template)"))
        if isinstance(role, str) and isinstance(content, str):
            messages.append(Message(role, content))
    return messages


def _template(data: dict[str, Any], kind: str, problems: list[Problem]) -> str | None:
    raw = data.get("template")
    if kind == "chat":
        if raw is not None:
            problems.append(Problem("template", "a chat prompt has messages, not a template"))
        return None
    if not isinstance(raw, str):
        problems.append(Problem("template", "a text prompt needs a template (a string)"))
        return None
    return raw


def _variables(raw: Any, problems: list[Problem]) -> dict[str, Variable]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(Problem("variables", "must be a mapping of name to {type, required}"))
        return {}
    out = {}
    for name, spec in raw.items():
        where = f"variables.{name}"
        if not isinstance(name, str) or not name.isidentifier():
            problems.append(Problem(where, "a variable name must be an identifier"))
            continue
        if spec is None:
            spec = {}
        if isinstance(spec, str):  # shorthand: `query: string`
            spec = {"type": spec}
        if not isinstance(spec, dict):
            problems.append(Problem(where, "must be a mapping such as {type: string}"))
            continue
        for key in spec:
            if key not in _VARIABLE_FIELDS:
                problems.append(Problem(f"{where}.{key}", _unknown(str(key), _VARIABLE_FIELDS)))
        kind = spec.get("type", "string")
        if kind not in VARIABLE_TYPES:
            problems.append(Problem(f"{where}.type", f"must be one of {', '.join(VARIABLE_TYPES)}"))
            continue
        required = spec.get("required", "default" not in spec)
        if not isinstance(required, bool):
            problems.append(Problem(f"{where}.required", "must be true or false"))
            continue
        default = spec.get("default")
        if default is not None and type_problem(kind, default):
            problems.append(Problem(f"{where}.default", f"must be {type_name(kind)}"))
            continue
        description = spec.get("description")
        out[name] = Variable(kind, required, default, description)
    return out


def _mapping(data: dict[str, Any], key: str, problems: list[Problem]) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(Problem(key, "must be a mapping"))
        return {}
    return value


def _template_problems(prompt: PromptTemplate) -> list[Problem]:
    problems = []
    declared = set(prompt.variables)
    for where, source in prompt.templates():
        try:
            names = template_names(source)
        except TemplateProblem as exc:
            problems.append(Problem(where, str(exc)))
            continue
        for variable in sorted(names.variables - declared):
            listed = ", ".join(sorted(declared)) or "none"
            problems.append(
                Problem(
                    where,
                    f"uses {{{{ {variable} }}}}, which is not declared under variables "
                    f"(declared: {listed})",
                )
            )
        for reference in names.includes:
            try:
                included, _ = split_reference(reference)
            except ValueError as exc:
                problems.append(Problem(where, str(exc)))
                continue
            if included == prompt.name:
                problems.append(Problem(where, "a prompt cannot include itself"))
    return problems


def _unknown(key: str, allowed: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown field; {hint}(allowed: {', '.join(sorted(allowed))})"


def version_summary(version: PromptVersion) -> dict[str, Any]:
    """Who made a version, when and why, without its document (for lists)."""
    return {
        "version": version.version,
        "content_hash": version.content_hash,
        "author": version.author,
        "message": version.message,
        "source_path": version.source_path,
        "git_commit": version.git_commit,
        "created_at": version.created_at,
    }


def version_to_json(version: PromptVersion) -> dict[str, Any]:
    """A version as JSON-ready data (the REST API's and the SDK's shape)."""
    summary = version_summary(version)
    return {
        "name": version.name,
        "version": summary.pop("version"),
        "type": version.template.type,
        "document": version.template.as_document(),
        "pins": dict(version.pins),
        **summary,
    }


def version_from_json(data: dict[str, Any]) -> PromptVersion:
    """The inverse of `version_to_json`; InvalidPrompt or KeyError on anything else."""
    return PromptVersion(
        name=data["name"],
        version=int(data["version"]),
        template=parse_document(data["document"]),
        content_hash=data.get("content_hash", ""),
        pins={str(k): int(v) for k, v in (data.get("pins") or {}).items()},
        created_at=float(data.get("created_at") or 0.0),
        author=data.get("author"),
        message=data.get("message"),
        source_path=data.get("source_path"),
        git_commit=data.get("git_commit"),
    )
