"""Prompts through the REST API and the gateway: push, labels, rollout, rendering on a call."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest

from keel.prompts.files import load_prompt_file
from tests.e2e.conftest import RunningKeel

EXAMPLES = Path(__file__).parents[2] / "examples" / "prompts"
VARIABLES = {"context": "The warranty lasts two years.", "query": "How long is the warranty?"}


def push(keel: RunningKeel, *documents: dict[str, Any], dry_run: bool = False) -> httpx.Response:
    body = {
        "prompts": [{"document": d, "source_path": f"prompts/{d['name']}.yaml"} for d in documents],
        "author": "dana",
        "message": "tighten the system prompt",
        "dry_run": dry_run,
    }
    return httpx.post(keel.url + "/api/prompts/push", json=body)


def example(name: str) -> dict[str, Any]:
    template, _ = load_prompt_file(EXAMPLES / f"{name}.yaml")
    return template.as_document()


def edited(document: dict[str, Any], system: str) -> dict[str, Any]:
    messages = [dict(m) for m in document["messages"]]
    messages[0]["content"] = system
    return {**document, "messages": messages}


def label(keel: RunningKeel, name: str, label_name: str, version: int) -> httpx.Response:
    return httpx.put(
        f"{keel.url}/api/prompts/{name}/labels/{label_name}",
        json={"version": version, "actor": "ci"},
    )


def test_push_versions_and_labels(keel: RunningKeel) -> None:
    first = push(keel, example("rag_qa"), example("house_style"))
    assert first.status_code == 200, first.text
    results = {r["name"]: r for r in first.json()["results"]}
    assert results["house_style"]["status"] == results["rag_qa"]["status"] == "created"
    assert results["rag_qa"]["version"] == 1
    assert "+name: rag_qa" in results["rag_qa"]["diff"]

    again = push(keel, example("rag_qa"))
    assert again.json()["results"][0] == {**again.json()["results"][0], "status": "unchanged"}

    preview = push(keel, edited(example("rag_qa"), "Be brief."), dry_run=True)
    (planned,) = preview.json()["results"]
    assert (planned["status"], planned["version"], planned["previous"]) == ("created", 2, 1)
    assert "+  content: Be brief." in planned["diff"]
    assert (
        httpx.get(keel.url + "/api/prompts/rag_qa").json()["latest"] == 1
    )  # dry run wrote nothing

    push(keel, edited(example("rag_qa"), "Be brief."))
    prompt = httpx.get(keel.url + "/api/prompts/rag_qa").json()
    assert prompt["latest"] == 2
    assert prompt["labels"] == {"latest": [{"version": 2, "weight": 100.0}]}
    assert [v["author"] for v in prompt["versions"]] == ["dana", "dana"]

    assert label(keel, "rag_qa", "production", 1).status_code == 200
    shown = httpx.get(keel.url + "/api/prompts/rag_qa/versions/production").json()
    assert shown["version"] == 1 and shown["pins"] == {"house_style": 1}
    diff = httpx.get(keel.url + "/api/prompts/rag_qa/diff", params={"a": "1", "b": "2"}).json()
    assert "-    You are a helpful assistant" in diff["diff"]
    assert "+  content: Be brief." in diff["diff"]

    history = httpx.get(keel.url + "/api/prompts/rag_qa/history").json()["data"]
    assert [e["action"] for e in history] == ["prompt.push", "prompt.push", "prompt.label.set"]
    assert history[-1]["actor"] == "ci"
    assert history[-1]["detail"] == {
        "label": "production", "from": None, "to": [{"version": 1, "weight": 100.0}]
    }  # fmt: skip


def test_unknown_names_are_404_naming_them(keel: RunningKeel) -> None:
    push(keel, example("house_style"))
    cases = {
        "/api/prompts/nope": "no prompt named 'nope'",
        "/api/prompts/house_style/versions/7": "has no version 7",
        "/api/prompts/house_style/versions/staging": "has no label 'staging'",
        "/api/prompts/house_style/resolve?label=staging": "has no label 'staging'",
    }
    for path, text in cases.items():
        answer = httpx.get(keel.url + path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"] == "application/problem+json"
        assert text in answer.json()["detail"], path
    assert label(keel, "house_style", "latest", 1).status_code == 422
    bad = push(keel, {"name": "x", "messages": [{"role": "sistem", "content": "{{ q }}"}]})
    assert bad.status_code == 422
    fields = {e["field"] for e in bad.json()["errors"]}
    assert fields == {"prompts[0].messages[0].role", "prompts[0].messages[0].content"}


def test_gateway_renders_a_named_prompt_and_records_the_version(keel: RunningKeel) -> None:
    push(keel, example("house_style"), example("rag_qa"))
    label(keel, "rag_qa", "production", 1)
    client = keel.client()
    answer = client.chat.completions.with_raw_response.create(
        model="fast",
        messages=[],
        extra_body={"prompt": {"name": "rag_qa", "variables": VARIABLES}},
        extra_headers={"x-keel-user": "u-1"},
    )
    assert answer.http_response.status_code == 200
    span = keel.span(answer.headers["x-keel-trace-id"])
    assert span.attributes == {
        "keel.prompt.name": "rag_qa", "keel.prompt.version": 1, "keel.prompt.label": "production"
    }  # fmt: skip
    system, user = span.input
    assert system["role"] == "system" and "three sentences" in system["content"]
    assert user == {"role": "user", "content": f"Context:\n{VARIABLES['context']}\n\n"
                    f"Question: {VARIABLES['query']}"}  # fmt: skip
    assert (span.params["temperature"], span.params["max_tokens"]) == (0.2, 400)

    # The request's own fields win over the prompt's config; the alias comes from the prompt.
    raw = httpx.post(
        keel.url + "/v1/chat/completions",
        json={"prompt": {"name": "rag_qa", "variables": VARIABLES}, "temperature": 0.9},
    )
    assert raw.status_code == 200, raw.text
    span = keel.span(raw.headers["x-keel-trace-id"])
    assert (span.alias, span.params["temperature"]) == ("fast", 0.9)


def test_prompt_errors_are_openai_errors_naming_the_field(keel: RunningKeel) -> None:
    push(keel, example("house_style"), example("rag_qa"))
    label(keel, "rag_qa", "production", 1)
    client = keel.client()
    cases = [
        ({"name": "nope"}, 404, "prompt", "no prompt named 'nope'"),
        ({"name": "rag_qa", "label": "staging"}, 404, "prompt", "no label 'staging'"),
        ({"name": "rag_qa", "variables": {"context": "c"}}, 400, "prompt.variables.query",
         "missing required variable 'query'"),
        ({"name": "rag_qa", "variables": {**VARIABLES, "contxt": 1}}, 400,
         "prompt.variables.contxt", "did you mean 'context'"),
        ({"name": "rag_qa", "variables": {**VARIABLES, "query": 3}}, 400,
         "prompt.variables.query", "must be a string"),
    ]  # fmt: skip
    for reference, status, param, text in cases:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(
                model="fast", messages=[], extra_body={"prompt": reference}
            )
        assert caught.value.status_code == status, reference
        error = caught.value.body
        assert isinstance(error, dict)
        assert error["param"] == param and text in error["message"], error


def test_rollout_is_sticky_and_moves_with_the_label(keel: RunningKeel) -> None:
    push(keel, example("house_style"), example("rag_qa"))
    push(keel, edited(example("rag_qa"), "Version two."))
    label(keel, "rag_qa", "production", 1)
    rollout = httpx.post(
        keel.url + "/api/prompts/rag_qa/labels/production/rollout",
        json={"version": 2, "weight": 30, "actor": "dana"},
    )
    assert rollout.status_code == 200, rollout.text
    assert rollout.json()["to"] == [{"version": 2, "weight": 30.0}, {"version": 1, "weight": 70.0}]

    def served(user: str) -> int:
        answer = httpx.post(
            keel.url + "/v1/chat/completions",
            json={"prompt": {"name": "rag_qa", "variables": VARIABLES}},
            headers={"x-keel-user": user},
        )
        span = keel.span(answer.headers["x-keel-trace-id"])
        return int(span.attributes["keel.prompt.version"])

    first = {f"user-{i}": served(f"user-{i}") for i in range(60)}
    assert all(served(user) == version for user, version in list(first.items())[:10])  # sticky
    share = Counter(first.values())[2] / len(first)
    assert 0.1 < share < 0.5, share

    conflict = httpx.post(keel.url + "/api/prompts/rag_qa/labels/production/rollout",
                          json={"version": 1, "weight": 10})  # fmt: skip
    assert conflict.status_code == 409

    promote = httpx.post(keel.url + "/api/prompts/rag_qa/labels/production/promote", json={})
    assert promote.json()["to"] == [{"version": 2, "weight": 100.0}]
    assert {served(user) for user in list(first)[:10]} == {2}  # the cache saw the label move

    back = httpx.post(keel.url + "/api/prompts/rag_qa/labels/production/rollback", json={})
    assert back.json()["to"] == [{"version": 2, "weight": 30.0}, {"version": 1, "weight": 70.0}]
    assert all(served(user) == version for user, version in list(first.items())[:10])
