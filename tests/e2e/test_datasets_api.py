"""Datasets through the REST API of a running Keel: push, versions, items, from traces.

Answers are checked against the schemas the OpenAPI document gives them, strictly (an
undocumented key fails), with the query API tests' checker.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson

from keel.core.datasets import derived_item_id
from keel.prompts.files import load_prompt_file
from tests.e2e.conftest import RunningKeel
from tests.e2e.test_query_api import _matches, conforms, document, get

EXAMPLES = Path(__file__).parents[2] / "examples" / "prompts"
VARIABLES = {"context": "The warranty lasts two years.", "query": "How long is the warranty?"}
ITEMS = [
    {"id": "w1", "input": VARIABLES, "expected": "Two years.", "context": ["The warranty..."]},
    {"input": "Hello", "metadata": {"topic": "greeting"}},
]


def send(keel: RunningKeel, method: str, path: str, body: Any, status: int = 200) -> dict[str, Any]:
    """`method path` with a JSON body; asserts the status and the documented schema."""
    answer = httpx.request(method, keel.url + path, json=body, timeout=60)
    assert answer.status_code == status, answer.text
    doc = document(keel)
    template = next(p for p in doc["paths"] if _matches(p, path))
    response = doc["paths"][template][method.lower()]["responses"][str(status)]
    (media_type, content), *_ = response["content"].items()
    assert answer.headers["content-type"] == media_type
    payload: dict[str, Any] = answer.json()
    conforms(doc, content["schema"], payload)
    return payload


def push(keel: RunningKeel, items: list[Any], status: int = 200, **extra: Any) -> dict[str, Any]:
    body = {"name": "golden", "items": items, "message": "first cut", "source": "golden.jsonl"}
    return send(keel, "POST", "/api/datasets", {**body, **extra}, status)


def test_push_versions_and_items(keel: RunningKeel) -> None:
    created = push(keel, ITEMS, author="dana")
    assert {k: created[k] for k in ("status", "version", "previous", "item_count", "added")} == {
        "status": "created", "version": 1, "previous": None, "item_count": 2, "added": 2,
    }  # fmt: skip
    assert push(keel, ITEMS)["status"] == "unchanged"
    planned = push(keel, [*ITEMS, {"input": "Bye"}], dry_run=True)
    assert (planned["status"], planned["version"], planned["dry_run"]) == ("created", 2, True)
    edited = [{**ITEMS[0], "expected": "2 years"}, {"input": "Bye"}]
    second = push(keel, edited, message="fix w1")
    assert (second["version"], second["added"], second["removed"], second["changed"]) == (
        2, 1, 1, 1,
    )  # fmt: skip

    listed = get(keel, "/api/datasets")["data"]
    assert [(d["name"], d["latest"], d["item_count"], d["message"]) for d in listed] == [
        ("golden", 2, 2, "fix w1")
    ]
    latest = get(keel, "/api/datasets/golden")
    assert (latest["version"], latest["latest"], latest["source"]) == (2, 2, "golden.jsonl")
    first = get(keel, "/api/datasets/golden", {"version": 1})
    assert (first["version"], first["latest"], first["author"]) == (1, 2, "dana")
    versions = get(keel, "/api/datasets/golden/versions")["data"]
    assert [v["version"] for v in versions] == [2, 1]

    items = get(keel, "/api/datasets/golden/items", {"version": 1})
    assert items["data"][0] == {**ITEMS[0], "context": [{"id": "1", "text": "The warranty..."}]}
    assert items["data"][1]["input"] == "Hello" and len(items["data"][1]["id"]) == 12
    assert items["next_cursor"] is None


def test_items_page_with_cursors_bound_to_their_version(keel: RunningKeel) -> None:
    push(keel, [{"id": f"i{n:03}", "input": f"q{n}"} for n in range(25)])
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 10}
    while True:
        page = get(keel, "/api/datasets/golden/items", params)
        seen.extend(item["id"] for item in page["data"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == [f"i{n:03}" for n in range(25)]
    push(keel, [{"input": "new"}])
    answer = get(keel, "/api/datasets/golden/items", {"cursor": params["cursor"]}, status=400)
    assert answer["errors"][0]["parameter"] == "cursor"


def test_mistakes_are_problems_naming_the_item_and_field(keel: RunningKeel) -> None:
    bad = push(keel, [{"input": "ok"}, {"input": 3, "expectd": "x"}, {"input": "ok"}], 422)
    assert bad["detail"] == "3 problems in the items; nothing was stored"
    assert bad["errors"] == [
        {
            "field": "items[1].expectd",
            "message": "unknown field; did you mean 'expected'? (an item has id, input, "
            "expected, context, metadata)",
        },
        {
            "field": "items[1].input",
            "message": "must be a text or an object of prompt variables, not a number",
        },
        {
            "field": "items[2].id",
            "message": f"{derived_item_id('ok')!r} is also the id at items[0] (derived from "
            "the input: the same input twice); give each item its own id",
        },
    ]
    assert get(keel, "/api/datasets")["data"] == []
    unknown = send(keel, "POST", "/api/datasets", {"name": "x", "items": [{}], "extra": 1}, 422)
    assert {e["field"] for e in unknown["errors"]} == {"extra"}
    name = send(keel, "POST", "/api/datasets", {"name": "no spaces", "items": ITEMS}, 422)
    assert "is not a dataset name" in name["detail"]
    assert get(keel, "/api/datasets/nope", status=404)["detail"].startswith("no dataset named")
    assert get(keel, "/api/datasets/nope/versions", status=404)["status"] == 404
    push(keel, ITEMS)
    assert "has no version 7" in get(keel, "/api/datasets/golden", {"version": 7}, 404)["detail"]
    broken = httpx.post(keel.url + "/api/datasets", content=b"{not json")
    assert broken.status_code == 400 and broken.json()["title"] == "Invalid JSON"


def test_a_dataset_larger_than_the_api_s_usual_body_limit(keel: RunningKeel) -> None:
    context = ["x" * 5_000] * 10
    items = [{"id": str(n), "input": f"q{n}", "context": context} for n in range(120)]
    assert len(orjson.dumps(items)) > 5 * 1024 * 1024
    assert push(keel, items)["item_count"] == 120
    assert get(keel, "/api/datasets/golden/items", {"limit": 1})["data"][0]["context"][9] == {
        "id": "10", "text": "x" * 5_000,
    }  # fmt: skip


def _prompt(name: str) -> dict[str, Any]:
    template, _ = load_prompt_file(EXAMPLES / f"{name}.yaml")
    return template.as_document()


def test_a_dataset_from_thumbed_down_traces_of_a_prompt(keel: RunningKeel) -> None:
    pushed = httpx.post(
        keel.url + "/api/prompts/push",
        json={"prompts": [{"document": _prompt(n)} for n in ("house_style", "rag_qa")]},
    )
    assert pushed.status_code == 200, pushed.text
    httpx.put(keel.url + "/api/prompts/rag_qa/labels/production", json={"version": 1})
    client = keel.client()
    traces = {}
    for query in ("How long is the warranty?", "Can I return it?", "Is shipping free?"):
        response = client.chat.completions.with_raw_response.create(
            model="fast",
            messages=[],
            extra_body={"prompt": {"name": "rag_qa", "variables": {**VARIABLES, "query": query}}},
        )
        traces[query] = response.headers["x-keel-trace-id"]
    plain = client.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "No prompt here"}]
    )
    for query, value in (("How long is the warranty?", False), ("Can I return it?", True)):
        score = {"name": "thumbs", "value": value, "trace_id": traces[query]}
        assert httpx.post(keel.url + "/api/scores", json=score).status_code == 201
    httpx.post(
        keel.url + "/api/scores",
        json={"name": "thumbs", "value": False, "trace_id": plain.headers["x-keel-trace-id"]},
    )
    keel.spans(4)  # every call is stored

    body = {
        "from": time.time() - 7 * 86400,
        "prompt": "rag_qa",
        "score": ["thumbs:eq:false"],
        "expected_from_output": True,
        "message": "thumbs down last week",
    }
    made = send(keel, "POST", "/api/datasets/regressions/from-traces", body)
    assert (made["status"], made["version"], made["traces"], made["item_count"]) == (
        "created", 1, 1, 1,
    )  # fmt: skip
    (item,) = get(keel, "/api/datasets/regressions/items")["data"]
    assert item["metadata"]["trace_id"] == traces["How long is the warranty?"]
    assert item["metadata"]["filter"]["prompt"] == "rag_qa"
    assert item["metadata"]["filter"]["score"] == ["thumbs:eq:false"]
    assert isinstance(item["expected"], str) and item["expected"]
    # The gateway records the rendered messages: the system prompt, then the user's turn.
    messages = item["input"]["messages"]
    assert messages[0]["role"] == "system" and "How long is the warranty?" in str(messages)
    header = get(keel, "/api/datasets/regressions")
    assert header["source"].startswith("traces ") and '"prompt":"rag_qa"' in header["source"]

    every = send(keel, "POST", "/api/datasets/all/from-traces", {**body, "score": []})
    assert every["traces"] == 3
    iso = {"from": "2000-01-01T00:00:00Z", "prompt": "rag_qa", "limit": 2}
    assert send(keel, "POST", "/api/datasets/two/from-traces", iso)["item_count"] == 2

    wrong = send(keel, "POST", "/api/datasets/x/from-traces", {**body, "score": ["thumbs"]}, 422)
    assert wrong["errors"][0]["field"] == "score"
    none = send(keel, "POST", "/api/datasets/x/from-traces", {**body, "prompt": "nope"}, 422)
    assert none["detail"].startswith("no trace made an item: 0 matched")
    missing = send(keel, "POST", "/api/datasets/x/from-traces", {"prompt": "rag_qa"}, 422)
    assert [e["field"] for e in missing["errors"]] == ["from"]
