"""The query API under /api on a running Keel: traces, trees, sessions, users, auth, OpenAPI.

Data arrives the ways it does in production: calls through the gateway (the official
openai client), OTLP/JSON posted to /v1/traces, and, for a 3,000-span trace, the span
writer. The answers read through `get` are checked against the schemas the OpenAPI document
gives them, strictly (an undocumented key fails).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from keel.core.ids import new_span_id, new_trace_id
from keel.core.spans import Span
from keel.core.usage import Usage
from keel.server.app import KeelApp
from keel.store.engine import create_engine_for
from keel.store.writer import SpanWriter
from keel.testing import FakeUpstream
from keel.tracing.semconv import SPAN_KINDS
from tests.e2e.conftest import KeelFactory, RunningKeel, fake_config

ALL_KINDS = tuple(SPAN_KINDS)
OTLP_TRACE = "5b8efff798038103d269b633813fc60c"


# --- helpers ----------------------------------------------------------------------------


_DOCUMENTS: dict[str, dict[str, Any]] = {}


def document(keel: RunningKeel, **headers: str) -> dict[str, Any]:
    """The running Keel's OpenAPI document (fetched once per server)."""
    if keel.url not in _DOCUMENTS:
        answer = httpx.get(keel.url + "/api/openapi.json", headers=headers)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        _DOCUMENTS[keel.url] = orjson.loads(answer.content)
    return _DOCUMENTS[keel.url]


def conforms(doc: dict[str, Any], schema: dict[str, Any], value: Any, at: str = "$") -> None:
    """Assert `value` matches `schema` of `doc` strictly (an undocumented key is drift)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        conforms(doc, doc["components"]["schemas"][name], value, at)
        return
    if "anyOf" in schema:
        failures = []
        for option in schema["anyOf"]:
            try:
                conforms(doc, option, value, at)
                return
            except AssertionError as exc:
                failures.append(str(exc))
        raise AssertionError(f"{at}: {value!r} matches no option: {failures}")
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        checks = {
            "object": lambda v: isinstance(v, dict),
            "array": lambda v: isinstance(v, list),
            "string": lambda v: isinstance(v, str),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "boolean": lambda v: isinstance(v, bool),
            "null": lambda v: v is None,
        }
        assert any(checks[kind](value) for kind in kinds), f"{at}: {value!r} is not {kinds}"
    if "enum" in schema:
        assert value in schema["enum"], f"{at}: {value!r} not in {schema['enum']}"
    if isinstance(value, dict) and "properties" in schema:
        properties = schema["properties"]
        missing = set(schema.get("required", [])) - set(value)
        assert not missing, f"{at}: missing {sorted(missing)}"
        for key, item in value.items():
            if key in properties:
                conforms(doc, properties[key], item, f"{at}.{key}")
            else:
                assert schema.get("additionalProperties"), f"{at}: undocumented key {key!r}"
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            conforms(doc, schema["items"], item, f"{at}[{index}]")


def get(keel: RunningKeel, path: str, params: Any = None, status: int = 200, **headers: str) -> Any:
    """GET `path`, assert the status, and check the body against the document's schema."""
    answer = httpx.get(keel.url + path, params=params, headers=headers, timeout=30)
    assert answer.status_code == status, answer.text
    body = answer.json()
    doc = document(keel, **headers)
    template = next(
        (p for p in doc["paths"] if _matches(p, path)), None
    )  # the documented path this URL is an instance of
    assert template is not None, f"{path} is not documented"
    response = doc["paths"][template]["get"]["responses"][str(status)]
    if "$ref" in response:
        response = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    (media_type, content), *_ = response["content"].items()
    assert answer.headers["content-type"] == media_type
    conforms(doc, content["schema"], body)
    return body


def _matches(template: str, path: str) -> bool:
    parts, actual = template.split("/"), path.split("/")
    return len(parts) == len(actual) and all(
        p == a or (p.startswith("{") and a) for p, a in zip(parts, actual, strict=True)
    )


def window(**params: Any) -> dict[str, Any]:
    now = time.time()
    return {"from": now - 3600, "to": now + 3600, **params}


def chat(keel: RunningKeel, text: str, **headers: str) -> None:
    keel.client().chat.completions.create(
        model="fast", messages=[{"role": "user", "content": text}], extra_headers=headers
    )


def post_otlp_app_trace(keel: RunningKeel) -> None:
    """An application's trace over OTLP/JSON: a root, a retrieval (with input), an LLM call."""
    start = int((time.time() - 60) * 1e9)

    def span(span_id: str, name: str, offset_ms: int, parent: str = "", **attrs: str) -> Any:
        body: dict[str, Any] = {
            "traceId": OTLP_TRACE,
            "spanId": span_id,
            "name": name,
            "startTimeUnixNano": str(start + offset_ms * 1_000_000),
            "endTimeUnixNano": str(start + (offset_ms + 100) * 1_000_000),
            "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()],
        }
        if parent:
            body["parentSpanId"] = parent
        return body

    root, search, llm = "eee19b7ec3c1b174", "eee19b7ec3c1b173", "eee19b7ec3c1b172"
    spans = [
        span(root, "answer question", 0, **{"user.id": "otel-user"}),
        span(search, "search", 10, root, **{"input.value": "Where is the Eiffel Tower?"}),
        span(llm, "chat gpt-4o-mini", 20, root, **{"gen_ai.request.model": "gpt-4o-mini"}),
    ]
    body = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    answer = httpx.post(
        keel.url + "/v1/traces",
        content=orjson.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text


def write_spans(keel: RunningKeel, spans: list[Span]) -> None:
    with SpanWriter(create_engine_for(keel.container.settings.database_url)) as writer:
        for span in spans:
            writer.emit(span)


def trace_ids(body: dict[str, Any]) -> list[str]:
    return [trace["trace_id"] for trace in body["data"]]


def score(keel: RunningKeel, **body: Any) -> None:
    assert httpx.post(keel.url + "/api/scores", json=body).status_code == 201


# --- tests ------------------------------------------------------------------------------


def test_traces_are_listed_once_each_and_every_filter_narrows(keel: RunningKeel) -> None:
    chat(keel, "first", **{"x-keel-user": "u1", "x-keel-session": "c1", "x-keel-tags": "beta,web"})
    chat(keel, "second", **{"x-keel-user": "u1", "x-keel-session": "c1", "x-keel-tags": "beta"})
    chat(keel, "third", **{"x-keel-user": "u2"})
    post_otlp_app_trace(keel)
    keel.spans(expected=6, kinds=ALL_KINDS)

    listed = get(keel, "/api/traces", window())
    assert len(listed["data"]) == 4 and listed["next_cursor"] is None
    starts = [trace["start_time"] for trace in listed["data"]]
    assert starts == sorted(starts, reverse=True)  # newest first
    app = next(t for t in listed["data"] if t["trace_id"] == OTLP_TRACE)
    assert app["name"] == "answer question" and app["root"]["parent_span_id"] is None
    assert app["totals"]["spans"] == 3 and app["user"] == "otel-user"
    gateway = [t for t in listed["data"] if t["trace_id"] != OTLP_TRACE]
    assert all(t["totals"]["spans"] == 1 and t["root"]["alias"] == "fast" for t in gateway)
    assert all(t["totals"]["input_tokens"] > 0 for t in gateway)
    first = next(t for t in gateway if t["root"]["input"][0]["content"] == "first")
    score(keel, name="thumbs", value=True, trace_id=first["trace_id"])
    score(keel, name="accuracy", value=0.5, trace_id=first["trace_id"])

    def ids(**params: Any) -> set[str]:
        return set(trace_ids(get(keel, "/api/traces", window(**params))))

    everything = {t["trace_id"] for t in listed["data"]}
    u1 = ids(user="u1")
    assert len(u1) == 2 and first["trace_id"] in u1
    assert ids(session="c1") == u1
    assert ids(tag=["beta", "web"]) == {first["trace_id"]}
    assert ids(tag="beta") == u1
    assert ids(model="fast") == everything - {OTLP_TRACE}
    assert ids(model="gpt-4o-mini") == everything  # the upstream model, and the OTel span's
    assert ids(status="ok") == everything and ids(status="error") == set()
    assert ids(q="eiffel TOWER") == {OTLP_TRACE}  # a child span's input
    assert ids(q="third") == {t["trace_id"] for t in gateway} - u1
    assert ids(name="answer question") == {OTLP_TRACE}
    assert ids(score="thumbs:eq:true") == {first["trace_id"]}
    assert ids(score=["thumbs:eq:true", "accuracy:gt:0.5"]) == set()
    assert ids(score="accuracy:lte:0.5") == {first["trace_id"]}
    assert ids(min_cost="0") == everything and ids(min_cost="1000") == set()
    assert ids(min_latency_ms="100000") == set()
    scored = get(keel, "/api/traces", window(score="thumbs:eq:true"))["data"][0]
    assert {(s["name"], s["value"]) for s in scored["scores"]} == {
        ("thumbs", True),
        ("accuracy", 0.5),
    }

    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()  # "...+00:00"
    iso = {"from": hour_ago, "to": "2999-01-01T00:00:00Z"}
    assert len(get(keel, "/api/traces", iso)["data"]) == 4
    assert get(keel, "/api/traces", {**iso, "from": "2998-01-01"})["data"] == []
    # An offset whose '+' was not percent-encoded (it arrives as a space) is still read.
    unencoded = "/api/traces?from=2020-01-01T00:00:00+00:00&to=2999-01-01T02:00:00+02:00"
    assert len(httpx.get(keel.url + unencoded).json()["data"]) == 4


def test_cursor_pages_return_every_trace_once_newest_first(keel: RunningKeel) -> None:
    base = time.time() - 100
    spans = [
        Span(
            trace_id=new_trace_id(),
            span_id=new_span_id(),
            name=f"t{i}",
            kind="span",
            start_time=base + i // 2,
            end_time=base + i // 2 + 0.5,
        )
        for i in range(11)
    ]
    write_spans(keel, spans)
    seen: list[str] = []
    params = window(limit=3)
    while True:
        page = get(keel, "/api/traces", params)
        assert len(page["data"]) <= 3
        seen.extend(trace_ids(page))
        if page["next_cursor"] is None:
            break
        params = {**params, "cursor": page["next_cursor"]}
    expected = sorted(spans, key=lambda s: (s.start_time, s.span_id), reverse=True)
    assert seen == [span.trace_id for span in expected]


def test_a_3000_span_trace_loads_top_down_and_lazily_in_pages(keel: RunningKeel) -> None:
    trace_id, base = new_trace_id(), time.time() - 600
    root = Span(
        trace_id=trace_id,
        span_id=new_span_id(),
        name="agent",
        kind="span",
        start_time=base,
        end_time=base + 100,
    )
    spans, steps = [root], []
    for i in range(20):
        step = Span(
            trace_id=trace_id,
            span_id=new_span_id(),
            parent_span_id=root.span_id,
            name=f"step {i}",
            kind="chain",
            start_time=base + i,
            end_time=base + i + 1,
        )
        steps.append(step)
        spans.append(step)
        spans.extend(
            Span(
                trace_id=trace_id,
                span_id=new_span_id(),
                parent_span_id=step.span_id,
                name=f"llm {i}.{j}",
                kind="generation",
                start_time=base + i + j / 1000,
                end_time=base + i + 0.5,
                usage=Usage(3, 2),
                cost_usd=0.01,
                input=[{"role": "user", "content": f"question {i}.{j}"}],
            )
            for j in range(150)
        )
    write_spans(keel, spans)
    assert len(spans) == 3021

    tree = get(keel, f"/api/traces/{trace_id}", {"limit": 200})
    assert (tree["span_count"], tree["returned"], tree["truncated"]) == (3021, 200, True)
    assert tree["root_span_id"] == root.span_id and tree["name"] == "agent"
    assert tree["totals"]["input_tokens"] == 9000 and tree["totals"]["cost_usd"] == pytest.approx(
        30
    )
    top, *rest = tree["spans"]
    assert (top["span_id"], top["depth"], top["child_count"]) == (root.span_id, 0, 20)
    assert top["subtree"]["spans"] == 3021 and top["subtree"]["output_tokens"] == 6000
    assert [s["name"] for s in rest[:20]] == [f"step {i}" for i in range(20)]
    assert rest[0]["child_count"] == 150 and rest[0]["subtree"]["cost_usd"] == pytest.approx(1.5)
    assert rest[20]["input"] == [{"role": "user", "content": "question 0.0"}]

    # The client lazy-loads the children of step 7, which the first answer did not include.
    loaded: list[str] = []
    params: dict[str, Any] = {"parent": steps[7].span_id, "limit": 64}
    while True:
        page = get(keel, f"/api/traces/{trace_id}/spans", params)
        loaded.extend(span["name"] for span in page["data"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert loaded == [f"llm 7.{j}" for j in range(150)]

    by_span = get(keel, f"/api/traces/{spans[-1].span_id}", {"limit": 1})
    assert by_span["trace_id"] == trace_id and by_span["returned"] == 1
    missing = get(keel, f"/api/traces/{'f' * 32}", status=404)
    assert missing["status"] == 404 and "f" * 32 in missing["detail"]
    get(keel, f"/api/traces/{trace_id}/spans", {"parent": "f" * 16}, status=404)


def test_sessions_users_and_a_session_as_a_conversation(keel: RunningKeel) -> None:
    for text in ("hello", "how are you?", "bye"):
        chat(keel, text, **{"x-keel-user": "dana", "x-keel-session": "conv/7"})
    chat(keel, "alone", **{"x-keel-user": "eli", "x-keel-session": "other"})
    keel.spans(expected=4)
    score(keel, name="resolved", value=True, session_id="conv/7")

    sessions = get(keel, "/api/sessions", window())
    assert [s["session_id"] for s in sessions["data"]] == ["other", "conv/7"]
    conv = sessions["data"][1]
    assert (conv["traces"], conv["spans"], conv["user"]) == (3, 3, "dana")
    assert conv["input_tokens"] > 0 and conv["first_seen"] <= conv["last_seen"]
    first_page = get(keel, "/api/sessions", window(limit=1))
    assert [s["session_id"] for s in first_page["data"]] == ["other"]
    second = get(keel, "/api/sessions", window(limit=1, cursor=first_page["next_cursor"]))
    assert [s["session_id"] for s in second["data"]] == ["conv/7"]

    session = get(keel, "/api/sessions/conv%2F7")  # a '/' in an id is percent-encoded
    assert session["session_id"] == "conv/7" and session["traces"] == 3
    turns = session["turns"]
    assert [t["input"][0]["content"] for t in turns] == ["hello", "how are you?", "bye"]
    assert all(t["output"] and t["totals"]["cost_usd"] > 0 for t in turns)
    trace = get(keel, f"/api/traces/{turns[0]['trace_id']}")  # each turn links to its trace
    assert trace["session"] == "conv/7"
    assert [s["name"] for s in session["scores"]] == ["resolved"]
    paged = get(keel, "/api/sessions/conv%2F7", {"limit": 2})
    rest = get(keel, "/api/sessions/conv%2F7", {"limit": 2, "cursor": paged["next_cursor"]})
    assert [t["input"][0]["content"] for t in paged["turns"] + rest["turns"]] == [
        "hello",
        "how are you?",
        "bye",
    ]
    get(keel, "/api/sessions/nobody", status=404)

    users = get(keel, "/api/users", window())
    assert [(u["user"], u["traces"]) for u in users["data"]] == [("eli", 1), ("dana", 3)]
    assert users["data"][1]["cost_usd"] == pytest.approx(
        sum(t["totals"]["cost_usd"] for t in turns)
    )


BAD_PARAMETERS: list[tuple[str, dict[str, Any], str]] = [
    ("/api/traces", {}, "from"),
    ("/api/traces", {"from": 100}, "to"),
    ("/api/traces", {"from": 200, "to": 100}, "to"),
    ("/api/traces", {"from": "yesterday", "to": 100}, "from"),
    ("/api/traces", window(limit=0), "limit"),
    ("/api/traces", window(limit=501), "limit"),
    ("/api/traces", window(limit="ten"), "limit"),
    ("/api/traces", window(cursor="not-a-cursor"), "cursor"),
    ("/api/traces", window(min_cost="cheap"), "min_cost"),
    ("/api/traces", window(min_latency_ms="nan"), "min_latency_ms"),
    ("/api/traces", window(status="maybe"), "status"),
    ("/api/traces", window(score="thumbs:like:true"), "score"),
    ("/api/traces", window(score="accuracy:gte:high"), "score"),
    ("/api/traces", window(score="thumbs"), "score"),
    ("/api/traces", window(tag=""), "tag"),
    ("/api/traces", window(min_cots="1"), "min_cots"),
    ("/api/sessions", {"to": 100}, "from"),
    ("/api/users", window(cursor="eyJ4Ijox"), "cursor"),
    ("/api/traces/abc", {"limit": 5001}, "limit"),
    ("/api/traces/abc/spans", {"limit": -1}, "limit"),
]


def test_bad_requests_are_problem_documents_naming_the_parameter(keel: RunningKeel) -> None:
    for path, params, parameter in BAD_PARAMETERS:
        problem = get(keel, path, params, status=400)
        assert problem["title"] == "Invalid query parameter", (path, params)
        assert [error["parameter"] for error in problem["errors"]] == [parameter], (path, params)
        assert problem["detail"].startswith(f"{parameter}: "), (path, params)

    # A cursor of one list is refused by another.
    now = time.time()
    write_spans(
        keel,
        [
            Span(
                trace_id=new_trace_id(),
                span_id=new_span_id(),
                name="x",
                kind="span",
                start_time=now - i,
                end_time=now - i,
                user_id=f"user {i}",
            )
            for i in range(2)
        ],
    )
    users_cursor = get(keel, "/api/users", window(limit=1))["next_cursor"]
    assert users_cursor is not None
    problem = get(keel, "/api/traces", window(cursor=users_cursor), status=400)
    assert problem["errors"][0]["parameter"] == "cursor"

    unknown = httpx.get(keel.url + "/api/nothing")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    wrong_method = httpx.get(keel.url + "/api/scores")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["status"] == 405
    assert httpx.delete(keel.url + "/api/traces").headers["allow"] == "GET"


def test_every_route_is_guarded_by_the_master_key_and_documented_exactly(
    keel_factory: KeelFactory, fake: FakeUpstream
) -> None:
    running = keel_factory(
        fake_config(fake, auth="{master_key: env:KEEL_TEST_MASTER}"), {"KEEL_TEST_MASTER": "sk-m"}
    )
    app = running.server.config.app
    assert isinstance(app, KeelApp)
    routes = app.api.routes
    assert len(routes) == 34
    for route in routes:
        url = running.url + route.pattern.replace("{trace_id}", "a" * 32)
        for name, value in {"session_id": "s", "name": "p", "label": "l", "selector": "1"}.items():
            url = url.replace("{" + name + "}", value)
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = httpx.request(route.method, url, headers=headers, json={})
            assert refused.status_code == 401, route.pattern
            assert refused.headers["content-type"] == "application/problem+json"
        key = {"Authorization": "Bearer sk-m"}
        allowed = httpx.request(route.method, url, headers=key, json={})
        assert allowed.status_code != 401, route.pattern

    # The document (valid JSON, itself checked against its own schema) lists exactly the
    # routes the router serves, with exactly the parameters each one accepts.
    doc = get(running, "/api/openapi.json", Authorization="Bearer sk-m")
    assert doc["openapi"].startswith("3.1.")
    assert doc["components"]["securitySchemes"]["masterKey"]["scheme"] == "bearer"
    assert "epoch seconds" in doc["info"]["description"].lower()
    served = {(route.method.lower(), route.pattern): route for route in routes}
    documented = {
        (method, path): operation
        for path, item in doc["paths"].items()
        for method, operation in item.items()
    }
    assert set(documented) == set(served)
    for where, operation in documented.items():
        parameters = operation.get("parameters", [])
        query = {p["name"] for p in parameters if p["in"] == "query"}
        assert query == set(served[where].parameters), where
        path = {p["name"] for p in parameters if p["in"] == "path"}
        assert path == set(served[where].regex.groupindex), where
        assert "401" in operation["responses"], where
        if query:
            assert "400" in operation["responses"], where
    for ref in _refs(doc):
        section, name = ref.split("/")[-2:]
        assert name in doc["components"][section], ref


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [r for item in value.values() for r in _refs(item)]
    if isinstance(value, list):
        return [r for item in value for r in _refs(item)]
    return []


def test_the_api_worker_threads_end_with_the_server(
    keel_factory: KeelFactory, fake: FakeUpstream
) -> None:
    running = keel_factory(fake_config(fake))
    assert httpx.get(running.url + "/api/traces", params=window()).status_code == 200
    assert any(t.name.startswith("keel-api") for t in threading.enumerate())
    running.stop()
    assert not running.thread.is_alive()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("keel-api")]
