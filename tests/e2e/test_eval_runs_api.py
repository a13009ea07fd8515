"""Eval runs through the REST API of a running Keel, and the traces their results make.

A runner's part is played by hand: it creates a run, calls the gateway with a
`traceparent` naming the item's trace and root span (as `GatewayChatModel` does), posts
the result, and the trace then reads as one tree: the item's root span `eval <run name>`
with the gateway's generation under it.
"""

from __future__ import annotations

import time
from typing import Any

import httpx2 as httpx

from keel.core.ids import format_traceparent, new_span_id, new_trace_id
from tests.e2e.conftest import RunningKeel
from tests.e2e.test_datasets_api import send
from tests.e2e.test_query_api import get

ITEMS = [{"id": f"q{n}", "input": {"question": f"Question {n}?"}} for n in range(3)]
RUN = {
    "name": "candidate",
    "suite": "rag",
    "variant": "v2-fast",
    "dataset": "golden",
    "dataset_version": 1,
    "task": {"kind": "prompt", "prompt": "rag_qa", "version": 2, "model": "fast"},
    "evaluators": [{"name": "exact", "type": "equals", "threshold": 1.0}],
    "repeat": 2,
    "metadata": {"git": "abc123"},
}


def start_run(keel: RunningKeel, **fields: Any) -> dict[str, Any]:
    pushed = httpx.post(keel.url + "/api/datasets", json={"name": "golden", "items": ITEMS})
    assert pushed.status_code == 200, pushed.text
    return send(keel, "POST", "/api/evals/runs", {**RUN, **fields})


def result(item_id: str, repetition: int = 0, **fields: Any) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "repetition": repetition,
        "output": f"Answer {item_id}",
        "latency_ms": 120.5,
        "cost_usd": 0.00002,
        "input_tokens": 20,
        "output_tokens": 4,
        "trace_id": new_trace_id(),
        "span_id": new_span_id(),
        "started_at": time.time() - 1,
        "verdicts": {"exact": {"score": 1.0, "passed": True, "explanation": "equal"}},
        **fields,
    }


def test_a_run_from_creation_to_finish(keel: RunningKeel) -> None:
    run = start_run(keel)
    run_id = run["run_id"]
    assert run == {
        **RUN, "run_id": run_id, "status": "running", "started_at": run["started_at"],
        "finished_at": None, "summary": None,
    }  # fmt: skip
    assert get(keel, f"/api/evals/runs/{run_id}") == run

    judge_failed = {"score": None, "passed": False, "explanation": "unparsed",
                    "error": "unparsed", "raw": "{oops"}  # fmt: skip
    batch = [result("q0"), result("q1", verdicts={"exact": judge_failed}), result("q2", 1)]
    path = f"/api/evals/runs/{run_id}/results"
    assert send(keel, "POST", path, {"results": batch}) == {
        "stored": 3, "spans": 3, "status": "running",
    }  # fmt: skip
    assert send(keel, "POST", path, {"results": batch})["spans"] == 0  # a retried batch

    stored = get(keel, path)
    assert stored["next_cursor"] is None
    assert [(r["item_id"], r["repetition"]) for r in stored["data"]] == [
        ("q0", 0), ("q1", 0), ("q2", 1),
    ]  # fmt: skip
    assert stored["data"][1]["verdicts"]["exact"] == judge_failed
    assert stored["data"][0] == {**batch[0], "error": None, "cached": False}
    first = get(keel, path, {"limit": 2})
    rest = get(keel, path, {"limit": 2, "cursor": first["next_cursor"]})
    assert [r["item_id"] for r in first["data"] + rest["data"]] == ["q0", "q1", "q2"]
    assert get(keel, f"/api/evals/runs/{run_id}/completed")["data"] == [
        {"item_id": "q0", "repetition": 0},
        {"item_id": "q1", "repetition": 0},
        {"item_id": "q2", "repetition": 1},
    ]

    summary = {"exact": {"mean": 0.67, "pass_rate": 0.67, "n": 3}}
    finished = send(keel, "POST", f"/api/evals/runs/{run_id}/finish", {"summary": summary})
    assert (finished["status"], finished["summary"]) == ("finished", summary)
    assert finished["finished_at"] >= run["started_at"]
    late = send(keel, "POST", path, {"results": [result("q0", 1)]}, 409)
    assert "is finished" in late["detail"]


def test_each_result_is_the_root_of_its_item_s_trace(keel: RunningKeel) -> None:
    run = start_run(keel, name="traced")
    trace_id, root_id = new_trace_id(), new_span_id()
    started = time.time()
    answer = keel.client().chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "Question 0?"}],
        extra_headers={
            "traceparent": format_traceparent(trace_id, root_id),
            "x-keel-tags": "eval",
        },
    )
    latency_ms = (time.time() - started) * 1000
    body = {
        "results": [
            result(
                "q0",
                output=answer.choices[0].message.content,
                trace_id=trace_id,
                span_id=root_id,
                started_at=started,
                latency_ms=latency_ms,
            )
        ]
    }
    assert send(keel, "POST", f"/api/evals/runs/{run['run_id']}/results", body)["spans"] == 1
    keel.spans(2, kinds=("generation", "span"))
    tree = get(keel, f"/api/traces/{trace_id}")
    root, generation = tree["spans"]
    assert (root["span_id"], root["name"], root["depth"], root["kind"]) == (
        root_id, "eval traced", 0, "span",
    )  # fmt: skip
    assert root["input"] == {"question": "Question 0?"}
    assert root["output"] == answer.choices[0].message.content
    assert root["attributes"]["keel.eval.run_id"] == run["run_id"]
    assert root["attributes"]["keel.eval.item_id"] == "q0"
    assert root["attributes"]["keel.eval.repetition"] == 0
    assert root["tags"] == ["eval"]
    assert (generation["parent_span_id"], generation["kind"], generation["depth"]) == (
        root_id, "generation", 1,
    )  # fmt: skip
    assert tree["totals"]["spans"] == 2 and tree["totals"]["input_tokens"] > 0
    listed = get(keel, "/api/traces", {"from": started - 60, "to": time.time() + 60,
                                       "tag": "eval"})  # fmt: skip
    assert [t["trace_id"] for t in listed["data"]] == [trace_id]


def test_runs_list_filters_pages_and_resumes(keel: RunningKeel) -> None:
    made = [start_run(keel, name=n, suite=s, started_at=float(t)) for t, n, s in (
        (1, "base", "rag"), (2, "cand", "rag"), (3, "base", "chat"),
    )]  # fmt: skip
    ids = [run["run_id"] for run in made]
    assert [r["run_id"] for r in get(keel, "/api/evals/runs")["data"]] == ids[::-1]
    assert [r["run_id"] for r in get(keel, "/api/evals/runs", {"suite": "rag"})["data"]] == [
        ids[1], ids[0],
    ]  # fmt: skip
    page = get(keel, "/api/evals/runs", {"limit": 2, "name": "base"})
    assert [r["run_id"] for r in page["data"]] == [ids[2], ids[0]] and not page["next_cursor"]
    page = get(keel, "/api/evals/runs", {"limit": 1})
    after = get(keel, "/api/evals/runs", {"limit": 5, "cursor": page["next_cursor"]})
    assert [r["run_id"] for r in after["data"]] == [ids[1], ids[0]]

    interrupted = send(keel, "POST", f"/api/evals/runs/{ids[0]}/finish",
                       {"status": "interrupted"})  # fmt: skip
    assert interrupted["status"] == "interrupted"
    listed = get(keel, "/api/evals/runs", {"status": "interrupted"})["data"]
    assert [r["run_id"] for r in listed] == [ids[0]]
    resumed = send(keel, "POST", f"/api/evals/runs/{ids[0]}/results",
                   {"results": [result("q0")]})  # fmt: skip
    assert resumed["status"] == "running"


def test_refusals(keel: RunningKeel) -> None:
    run_id = start_run(keel)["run_id"]
    missing = send(keel, "POST", "/api/evals/runs", {**RUN, "dataset_version": 5}, 422)
    assert "has no version 5" in missing["detail"]
    bad = send(keel, "POST", "/api/evals/runs", {**RUN, "repeat": 0, "colour": "red"}, 422)
    assert {e["field"] for e in bad["errors"]} == {"repeat", "colour"}
    assert get(keel, "/api/evals/runs/" + "0" * 32, status=404)["status"] == 404
    path = f"/api/evals/runs/{run_id}/results"
    unknown = send(keel, "POST", path, {"results": [result("q9")]}, 422)
    assert "item 'q9' is not in dataset 'golden' v1" in unknown["detail"]
    orphan = send(keel, "POST", path, {"results": [result("q0", trace_id=None)]}, 422)
    assert orphan["errors"] == [{"field": "results.0.trace_id", "message": "required with span_id"}]
    ids = send(keel, "POST", path, {"results": [result("q0", span_id="xyz")]}, 422)
    assert ids["errors"][0]["field"] == "results.0.span_id"
    status = send(keel, "POST", f"/api/evals/runs/{run_id}/finish", {"status": "running"}, 422)
    assert status["errors"][0]["field"] == "status"
    assert (
        get(keel, "/api/evals/runs", {"status": "done"}, status=400)["errors"][0]["parameter"]
        == "status"
    )
    assert get(keel, f"/api/evals/runs/{run_id}/completed")["data"] == []
