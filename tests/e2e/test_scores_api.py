"""`POST /api/scores` on a running Keel: every data type, every target, and bad input."""

from __future__ import annotations

import httpx2 as httpx
import pytest

from keel.store.engine import create_engine_for
from keel.store.scores import ScoreRepository
from keel.testing import FakeUpstream
from tests.e2e.conftest import KeelFactory, RunningKeel, fake_config

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def _scores(keel: RunningKeel) -> ScoreRepository:
    return ScoreRepository(create_engine_for(keel.container.settings.database_url))


def test_a_thumbs_up_is_one_call_and_every_type_is_stored(keel: RunningKeel) -> None:
    url = keel.url + "/api/scores"
    thumbs = httpx.post(
        url, json={"name": "thumbs", "value": True, "trace_id": TRACE, "source": "human"}
    )
    assert thumbs.status_code == 201
    assert thumbs.json()["data_type"] == "boolean"
    bodies = [
        {"name": "accuracy", "value": 0.87, "trace_id": TRACE, "span_id": SPAN,
         "source": "evaluator", "comment": "3 of 4 claims supported", "author": "judge-v2"},
        {"name": "tone", "value": "friendly", "trace_id": TRACE},
        {"name": "review", "value": "Cited the wrong document.", "data_type": "text",
         "trace_id": TRACE, "author": "dana"},
        {"name": "resolved", "value": False, "session_id": "conv-7"},
    ]  # fmt: skip
    for body in bodies:
        assert httpx.post(url, json=body).status_code == 201

    stored = {s.name: s for s in _scores(keel).for_trace(TRACE)}
    assert set(stored) == {"thumbs", "accuracy", "tone", "review"}
    assert stored["thumbs"].display_value is True and stored["thumbs"].source == "human"
    accuracy = stored["accuracy"]
    assert (accuracy.data_type, accuracy.value, accuracy.span_id) == ("numeric", 0.87, SPAN)
    assert (accuracy.comment, accuracy.author) == ("3 of 4 claims supported", "judge-v2")
    assert (stored["tone"].data_type, stored["tone"].display_value) == ("categorical", "friendly")
    assert stored["review"].data_type == "text"
    (session_score,) = _scores(keel).for_session("conv-7")
    assert (session_score.name, session_score.display_value) == ("resolved", False)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "value": 1}, "trace_id"),  # no target
        ({"name": "x", "value": [1], "trace_id": TRACE}, "value"),
        ({"name": "x", "value": "high", "data_type": "numeric", "trace_id": TRACE}, "value"),
        ({"name": "x", "value": 1, "data_type": "boolean", "trace_id": TRACE}, "value"),
        ({"name": "x", "value": 1, "data_type": "percent", "trace_id": TRACE}, "data_type"),
        ({"name": "x", "value": 1, "trace_id": "not-a-trace"}, "trace_id"),
        ({"name": "", "value": 1, "trace_id": TRACE}, "name"),
        ({"name": "x", "value": 1, "trace_id": TRACE, "source": "robot"}, "source"),
        ({"name": "x", "value": 1, "trace_id": TRACE, "colour": "red"}, "colour"),
    ],
)
def test_bad_scores_get_a_problem_document_naming_the_field(
    keel: RunningKeel, body: dict[str, object], field: str
) -> None:
    answer = httpx.post(keel.url + "/api/scores", json=body)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == 422 and problem["title"] == "Invalid score"
    assert field in {error["field"] for error in problem["errors"]}
    assert _scores(keel).for_trace(TRACE) == []  # nothing half-stored


def test_not_json_is_a_problem_too(keel: RunningKeel) -> None:
    answer = httpx.post(keel.url + "/api/scores", content=b"{nope")
    assert answer.status_code == 422 and answer.json()["errors"]


def test_the_master_key_guards_scores(keel_factory: KeelFactory, fake: FakeUpstream) -> None:
    running = keel_factory(
        fake_config(fake, auth="{master_key: env:KEEL_TEST_MASTER}"), {"KEEL_TEST_MASTER": "sk-m"}
    )
    body = {"name": "thumbs", "value": True, "trace_id": TRACE}
    refused = httpx.post(running.url + "/api/scores", json=body)
    assert refused.status_code == 401 and refused.json()["status"] == 401
    allowed = httpx.post(
        running.url + "/api/scores", json=body, headers={"Authorization": "Bearer sk-m"}
    )
    assert allowed.status_code == 201


def test_a_score_sent_again_with_its_id_replaces_it(keel: RunningKeel) -> None:
    url = keel.url + "/api/scores"
    vote = {"id": "0b9f8a52-6a1e-4c53-9a57-4c1b3d0e7f11", "name": "thumbs", "trace_id": TRACE}
    first = httpx.post(url, json={**vote, "value": True})
    assert first.status_code == 201 and first.json()["id"] == vote["id"]
    retried = httpx.post(url, json={**vote, "value": True})  # a client's retry
    changed = httpx.post(url, json={**vote, "value": False})  # the user changed their mind
    assert (retried.status_code, changed.status_code) == (200, 200)
    (stored,) = _scores(keel).for_trace(TRACE)
    assert (stored.score_id, stored.display_value) == (vote["id"], False)
    bad = httpx.post(url, json={**vote, "id": "has space", "value": True})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "id"


def test_a_score_of_a_span_alone_shows_on_its_trace(keel: RunningKeel) -> None:
    # One score arrives before its span is stored, one after: both belong to the trace.
    url = keel.url + "/api/scores"
    early = httpx.post(url, json={"name": "early", "value": 1, "span_id": SPAN})
    assert early.status_code == 201
    trace = "ab" * 16
    span = {
        "traceId": trace, "spanId": SPAN, "name": "retrieve", "kind": 1,
        "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000",
    }  # fmt: skip
    otlp = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    assert httpx.post(keel.url + "/v1/traces", json=otlp).status_code == 200
    keel.container.writer.flush()
    late = httpx.post(url, json={"name": "late", "value": 2, "span_id": SPAN})
    assert late.status_code == 201
    tree = httpx.get(f"{keel.url}/api/traces/{trace}").json()
    assert {(s["name"], s["span_id"]) for s in tree["scores"]} == {
        ("early", SPAN),
        ("late", SPAN),
    }
    (late_score,) = [s for s in _scores(keel).for_trace(trace) if s.name == "late"]
    assert late_score.trace_id == trace  # resolved when it was stored
