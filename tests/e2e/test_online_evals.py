"""Online evaluation: a sample of live gateway traffic is scored in the background, and the
scores land on the traces with source `evaluator`; the judge's own calls are not sampled."""

from __future__ import annotations

import time
from typing import Any

import httpx2 as httpx

from keel.testing import FakeUpstream
from keel.testing.behavior import Behavior
from tests.e2e.conftest import KeelFactory, fake_config

ONLINE = """
online_evals:
  - name: support_quality
    sample: 1.0
    model: fast
    judge: claude
    evaluators:
      - {type: refusal, name: answered, negate: true}
      - {type: llm_rubric, name: helpful, params: {rubric: "Does it help the user?"}}
  - name: nothing_sampled
    sample: 0.0
    evaluators: [{type: is_json}]
"""


def _scores(url: str, trace_id: str, expected: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while True:
        answer = httpx.get(f"{url}/api/traces/{trace_id}")
        scores = answer.json().get("scores", []) if answer.status_code == 200 else []
        if len(scores) >= expected or time.monotonic() > deadline:
            return scores
        time.sleep(0.05)


def test_live_calls_are_scored_off_the_request_path(
    keel_factory: KeelFactory, fake: FakeUpstream
) -> None:
    keel = keel_factory(fake_config(fake) + ONLINE)
    client = keel.client()
    fake.enqueue(
        Behavior(reply="I'm sorry, but I can't help with that."), path="/v1/chat/completions"
    )
    fake.enqueue(
        Behavior(reply='{"reason": "It refuses a simple request.", "score": 1}'),
        path="/v1/messages",
    )
    reply = client.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "Where is my parcel?"}]
    )
    trace_id = reply.headers["x-keel-trace-id"]
    scores = {s["name"]: s for s in _scores(keel.url, trace_id, 2)}
    assert set(scores) == {"answered", "helpful"}
    assert scores["answered"]["value"] == 0.0  # it refused
    assert scores["helpful"]["value"] == 0.0  # grade 1 of 5
    assert all(s["source"] == "evaluator" for s in scores.values())
    assert "It refuses a simple request." in scores["helpful"]["comment"]
    # the judge's call joined the scored trace, tagged eval, and was not itself sampled
    judge = next(r for r in fake.requests if r.path == "/v1/messages")
    assert "Where is my parcel?" in judge.body.decode()
    assert fake.pending == 0
    online = keel.container.online
    assert online is not None and online.stats.scored == 1 and online.stats.sampled == 1
