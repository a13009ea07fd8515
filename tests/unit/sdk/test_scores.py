"""keel.score(): the bodies sent to /api/scores, and what is refused without raising."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import keel
import keel.sdk
from keel.sdk import Client
from tests.unit.sdk.collector import Collector
from tests.unit.sdk.conftest import Configure

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_scores_of_each_type_are_posted_without_empty_fields(
    configure: Configure, collector: Collector
) -> None:
    configure(api_key="keel-secret")
    keel.score("thumbs", True, trace_id=TRACE, source="human", author="end-user")
    keel.score("relevance", 0.8, trace_id=TRACE, span_id="00f067aa0ba902b7", source="evaluator")
    keel.score("topic", "billing", session_id="s-1")
    keel.score("feedback", "Great answer", trace_id=TRACE, data_type="text", comment="via app")
    keel.score("thumbs", False, trace_id=TRACE, score_id="vote-7")
    assert keel.flush(5)

    sent = collector.scores()
    ids = [body.pop("id") for body in sent]
    # an id per score, made before the first try, so a retry replaces instead of adding
    assert len(set(ids)) == 5 and ids[-1] == "vote-7"
    assert all(len(i) == 32 for i in ids[:-1])
    assert sent == [
        {
            "name": "thumbs",
            "value": True,
            "data_type": "boolean",
            "trace_id": TRACE,
            "source": "human",
            "author": "end-user",
        },
        {
            "name": "relevance",
            "value": 0.8,
            "data_type": "numeric",
            "trace_id": TRACE,
            "span_id": "00f067aa0ba902b7",
            "source": "evaluator",
        },
        {
            "name": "topic",
            "value": "billing",
            "data_type": "categorical",
            "session_id": "s-1",
            "source": "api",
        },
        {
            "name": "feedback",
            "value": "Great answer",
            "data_type": "text",
            "trace_id": TRACE,
            "source": "api",
            "comment": "via app",
        },
        {
            "name": "thumbs",
            "value": False,
            "data_type": "boolean",
            "trace_id": TRACE,
            "source": "api",
        },
    ]
    (request, *_) = collector.requests("/api/scores")
    assert request.headers["authorization"] == "Bearer keel-secret"
    assert request.headers["content-type"] == "application/json"
    assert keel.sdk.stats().scores_sent == 5


def test_the_current_trace_is_the_default_target(sdk: Client, collector: Collector) -> None:
    @keel.observe
    def answer() -> str:
        keel.score("confidence", 3)
        return keel.current_trace_id() or ""

    trace_id = answer()
    assert keel.flush(5)
    (sent,) = collector.scores()
    assert len(sent.pop("id")) == 32
    assert [sent] == [
        {
            "name": "confidence",
            "value": 3,
            "data_type": "numeric",
            "trace_id": trace_id,
            "source": "api",
        }
    ]


@pytest.mark.parametrize(
    ("args", "kwargs", "problem"),
    [
        (("thumbs", True), {}, "no target"),
        (("thumbs", True), {"trace_id": TRACE, "source": "user"}, "source 'user'"),
        (("latency", float("nan")), {"trace_id": TRACE}, "finite"),
        (("ok", "yes"), {"trace_id": TRACE, "data_type": "boolean"}, "cannot be scored"),
        (("ok", 1), {"trace_id": TRACE, "data_type": "stars"}, "data_type 'stars'"),
        (("ok", [1]), {"trace_id": TRACE}, "not list"),
    ],
)
def test_an_invalid_score_is_logged_not_raised(
    sdk: Client,
    collector: Collector,
    caplog: pytest.LogCaptureFixture,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    problem: str,
) -> None:
    with caplog.at_level(logging.WARNING, logger="keel.sdk"):
        keel.score(*args, **kwargs)
    assert keel.flush(5)
    assert collector.scores() == []
    assert problem in caplog.text
