"""Prompt documents: validation names every field at fault; the hash ignores style."""

from __future__ import annotations

from typing import Any

import pytest

from keel.core.prompts import InvalidPrompt, content_hash, parse_document

GOOD: dict[str, Any] = {
    "name": "rag_qa",
    "type": "chat",
    "messages": [{"role": "system", "content": "Use {{ context }}."}],
    "variables": {"context": {"type": "string", "required": True}},
    "model": {"alias": "fast", "temperature": 0.2, "max_tokens": 400},
    "metadata": {"tested_on": 500},
    "tags": ["rag"],
}


def problems(document: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidPrompt) as caught:
        parse_document(document)
    return {p.field: p.message for p in caught.value.problems}


def test_the_example_document_parses_and_round_trips() -> None:
    prompt = parse_document(GOOD)
    assert prompt.alias == "fast" and prompt.params == {"temperature": 0.2, "max_tokens": 400}
    assert parse_document(prompt.as_document()) == prompt


def test_every_problem_is_named_by_its_field() -> None:
    found = problems(
        {
            "name": "bad name!",
            "messages": [{"role": "sistem", "content": "{{ contxt }}"}, {"role": "user"}],
            "variables": {"context": {"type": "str"}},
            "model": {"alias": "fast", "temprature": 0.2},
            "tagz": [],
        }
    )
    assert set(found) == {
        "name", "messages[0].role", "messages[0].content", "messages[1].content",
        "variables.context.type", "model.temprature", "tagz",
    }  # fmt: skip
    assert "did you mean 'temperature'" in found["model.temprature"]
    assert "did you mean 'tags'" in found["tagz"]
    assert "{{ contxt }}" in found["messages[0].content"]


def test_templates_are_checked_for_syntax_and_includes() -> None:
    found = problems({"name": "p", "type": "text", "template": "{% if x %}never closed"})
    assert "line 1 of the template" in found["template"]
    found = problems({"name": "p", "type": "text", "template": "{% include 'p' %}"})
    assert "cannot include itself" in found["template"]
    found = problems({"name": "p", "type": "text", "template": "{% include 'x@production' %}"})
    assert "pin a version with name@N" in found["template"]


def test_the_hash_ignores_key_order_and_sees_content_and_pins() -> None:
    prompt = parse_document(GOOD)
    reordered = parse_document(dict(reversed(list(GOOD.items()))))
    assert content_hash(prompt, {}) == content_hash(reordered, {})
    changed = parse_document({**GOOD, "model": {**GOOD["model"], "temperature": 0.3}})
    assert content_hash(changed, {}) != content_hash(prompt, {})
    assert content_hash(prompt, {"style": 2}) != content_hash(prompt, {"style": 3})
