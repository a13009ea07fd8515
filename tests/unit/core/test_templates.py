"""Prompt rendering: variables checked by name and type, the sandbox, pinned includes."""

from __future__ import annotations

from typing import Any

import pytest

from keel.core.prompts import PromptVersion, content_hash, parse_document
from keel.core.templates import PromptRenderer, RenderError

CHAT = {
    "name": "rag_qa",
    "messages": [
        {"role": "system", "content": "Answer from the context. {% include 'style' %}"},
        {"role": "user", "content": "Context:\n{{ context }}\n\nQuestion: {{ query }}"},
    ],
    "variables": {
        "context": {"type": "string"},
        "query": {"type": "string"},
        "tone": {"type": "string", "default": "plain"},
    },
}


def version(
    document: dict[str, Any], number: int, pins: dict[str, int] | None = None
) -> PromptVersion:
    template = parse_document(document)
    digest = content_hash(template, pins or {})
    return PromptVersion(template.name, number, template, digest, pins or {}, 0.0)


def style(number: int, text: str) -> PromptVersion:
    variables = {"tone": {"type": "string", "default": "plain"}}
    return version(
        {"name": "style", "type": "text", "template": text, "variables": variables}, number
    )


def renderer(style_version: int = 2) -> PromptRenderer:
    styles = {1: style(1, "Old rules."), 2: style(2, "Write in a {{ tone }} tone.")}
    return PromptRenderer(
        version(CHAT, 7, {"style": style_version}),
        {f"style@{style_version}": styles[style_version]},
    )


def test_a_chat_prompt_renders_openai_messages_with_its_pinned_include() -> None:
    messages = renderer().render({"context": "Two years.", "query": "How long?"})
    assert messages == [
        {"role": "system", "content": "Answer from the context. Write in a plain tone."},
        {"role": "user", "content": "Context:\nTwo years.\n\nQuestion: How long?"},
    ]
    # The pin decides which version of the included prompt is used.
    old = renderer(style_version=1).render({"context": "c", "query": "q"})
    assert isinstance(old, list) and old[0]["content"] == "Answer from the context. Old rules."


def test_a_text_prompt_renders_a_string() -> None:
    text = PromptRenderer(style(2, "Write in a {{ tone }} tone.\n"), {})
    assert text.render({"tone": "dry"}) == "Write in a dry tone.\n"


@pytest.mark.parametrize(
    ("variables", "variable", "message"),
    [
        ({"context": "c"}, "query", "missing required variable 'query'"),
        ({}, "context", "missing required variables 'context', 'query'"),
        ({"context": "c", "query": "q", "qurey": "x"}, "qurey", "did you mean 'query'?"),
        ({"context": "c", "query": 7}, "query", "'query' must be a string (got int)"),
    ],
)
def test_a_missing_unknown_or_mistyped_variable_is_named(
    variables: dict[str, Any], variable: str, message: str
) -> None:
    with pytest.raises(RenderError) as caught:
        renderer().render(variables)
    assert caught.value.variable == variable
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "template",
    [
        "{{ query.__class__.__mro__ }}",
        "{{ query.__class__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ ''.__class__ }}",
        "{{ self._TemplateReference__context }}",
    ],
)
def test_templates_cannot_reach_python_internals(template: str) -> None:
    document = {"name": "evil", "type": "text", "template": template, "variables": {"query": {}}}
    prompt = PromptRenderer(version(document, 1), {})
    with pytest.raises(RenderError) as caught:
        prompt.render({"query": "x"})
    assert "not allowed" in str(caught.value) or "reads something not given" in str(caught.value)


def test_templates_cannot_change_what_they_are_given() -> None:
    document = {
        "name": "mutate",
        "type": "text",
        "template": "{{ items.append(1) }}{{ items }}",
        "variables": {"items": {"type": "array"}},
    }
    given = [0]
    with pytest.raises(RenderError):
        PromptRenderer(version(document, 1), {}).render({"items": given})
    assert given == [0]
