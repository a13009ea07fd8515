"""Prompt template rendering: Jinja2 in its immutable sandbox, variables checked first.

Templates cannot reach Python internals (`{{ ''.__class__ }}` is refused by the
sandbox) nor change the values passed in. Every variable is checked against the
prompt's declarations before rendering: a missing one, one the prompt does not
declare (usually a typo) and one of the wrong type are errors that name it.

Includes (`{% include "safety_rules" %}`) name other prompts; a reference is resolved
through the including version's pins, so a rendered version never changes after push.
A `PromptRenderer` compiles a version and everything it includes once; rendering
then costs one Jinja render per template.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from jinja2 import (
    DictLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateSyntaxError,
    UndefinedError,
    meta,
)
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

if TYPE_CHECKING:
    from keel.core.prompts import PromptVersion


@dataclass(frozen=True, slots=True)
class Variable:
    """One declared variable: its JSON type, whether it is required, its default."""

    type: str = "string"
    required: bool = True
    default: Any = None
    description: str | None = None


_A = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
}


def type_problem(kind: str, value: Any) -> bool:
    """True when `value` is not of the variable type `kind`."""
    if kind == "string":
        return not isinstance(value, str)
    if kind == "boolean":
        return not isinstance(value, bool)
    if kind == "integer":
        return not isinstance(value, int) or isinstance(value, bool)
    if kind == "number":
        return not isinstance(value, int | float) or isinstance(value, bool)
    if kind == "array":
        return not isinstance(value, list | tuple)
    return not isinstance(value, dict)


def type_name(kind: str) -> str:
    """How to say what a variable of type `kind` must be ("a string")."""
    return _A[kind]


class TemplateProblem(ValueError):
    """A template that does not parse; the message gives the line within the template."""


class RenderError(ValueError):
    """A render that failed; `variable` names the variable at fault when there is one."""

    def __init__(self, message: str, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


@dataclass(frozen=True, slots=True)
class TemplateNames:
    """The variables a template reads and the prompts it includes."""

    variables: frozenset[str]
    includes: tuple[str, ...]


class _Environment(ImmutableSandboxedEnvironment):
    """Resolves an include written in a template through the pins of the version it is in."""

    def __init__(self, pins: Mapping[str, Mapping[str, int]], sources: Mapping[str, str]) -> None:
        super().__init__(
            loader=DictLoader(dict(sources)),
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self._pins = pins

    def join_path(self, template: str, parent: str) -> str:
        owner = parent.split("#", 1)[0]  # "rag_qa@7#1" is message 1 of rag_qa@7
        name, _, version = template.partition("@")
        if version:
            return template
        pinned = self._pins.get(owner, {}).get(template)
        return f"{name}@{pinned}" if pinned is not None else template


@cache
def _parser() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def template_names(source: str) -> TemplateNames:
    """What `source` reads and includes; TemplateProblem when it does not parse."""
    environment = _parser()
    try:
        tree = environment.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"line {exc.lineno} of the template: {exc.message}") from None
    includes = list(meta.find_referenced_templates(tree))
    if any(reference is None for reference in includes):
        raise TemplateProblem("include a prompt by its name written in quotes")
    variables = meta.find_undeclared_variables(tree) - set(environment.globals)
    return TemplateNames(frozenset(variables), tuple(r for r in includes if r is not None))


def bind_variables(declared: Mapping[str, Variable], given: Mapping[str, Any]) -> dict[str, Any]:
    """The values to render with: `given` checked against `declared`, defaults filled in."""
    for name in given:
        if name not in declared:
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            listed = ", ".join(declared) or "none"
            raise RenderError(
                f"unknown variable {name!r}; {hint}(declared: {listed})", variable=name
            )
    values: dict[str, Any] = {}
    missing = []
    for name, variable in declared.items():
        if name in given:
            value = given[name]
            if type_problem(variable.type, value):
                raise RenderError(
                    f"variable {name!r} must be {type_name(variable.type)} "
                    f"(got {type(value).__name__})",
                    variable=name,
                )
            values[name] = value
        elif variable.required:
            missing.append(name)
        else:
            values[name] = variable.default
    if missing:
        raise RenderError(
            f"missing required variable{'s' if len(missing) > 1 else ''} "
            + ", ".join(repr(name) for name in missing),
            variable=missing[0],
        )
    return values


class PromptRenderer:
    """A version compiled with everything it includes, ready to render many times."""

    __slots__ = ("_messages", "_text", "_variables", "name", "type", "version")

    def __init__(self, version: PromptVersion, included: Mapping[str, PromptVersion]) -> None:
        """`included` maps `name@N` to every version reachable through includes."""
        self.name = version.name
        self.version = version.version
        self.type = version.template.type
        self._variables = version.template.variables
        sources: dict[str, str] = {}
        pins: dict[str, Mapping[str, int]] = {version.ref: version.pins}
        for ref, other in included.items():
            sources[ref] = other.template.template or ""
            pins[ref] = other.pins
        names = []
        for index, (_, source) in enumerate(version.template.templates()):
            names.append(f"{version.ref}#{index}")
            sources[names[-1]] = source
        environment = _Environment(pins, sources)
        try:
            compiled = [environment.get_template(name) for name in names]
        except TemplateError as exc:
            raise RenderError(f"{version.ref} does not compile: {exc}") from None
        self._text: Template | None = compiled[0] if self.type == "text" else None
        self._messages: list[tuple[str, Template]] = [
            (message.role, template)
            for message, template in zip(version.template.messages, compiled, strict=False)
        ]

    def render(self, variables: Mapping[str, Any]) -> str | list[dict[str, str]]:
        """The text (text prompt) or OpenAI-format messages (chat prompt) for `variables`."""
        values = bind_variables(self._variables, variables)
        try:
            if self._text is not None:
                return self._text.render(values)
            return [
                {"role": role, "content": template.render(values)}
                for role, template in self._messages
            ]
        except SecurityError as exc:
            raise RenderError(f"the template is not allowed to do that: {exc}") from None
        except UndefinedError as exc:
            raise RenderError(f"the template reads something not given: {exc}") from None
        except TemplateError as exc:
            raise RenderError(f"the template failed: {exc}") from None
