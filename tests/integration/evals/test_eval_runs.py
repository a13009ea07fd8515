"""Eval runs on SQLite and PostgreSQL: pinned versions, idempotent results, spans, statuses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine

from keel.core.eval_runs import EvalRun, ItemResult
from keel.core.evaluation import Verdict
from keel.core.ids import new_span_id, new_trace_id
from keel.evals.datasets import DatasetService, parse_items
from keel.evals.run_records import RunConflict, RunError, RunNotFound, RunRecords
from keel.ports import RunFilter
from keel.store.datasets import DatasetStore
from keel.store.eval_runs import EvalRunStore
from keel.store.spans import SpanRepository
from keel.store.writer import SpanWriter

QUESTIONS = [{"id": f"q{n}", "input": {"question": f"question {n}"}} for n in range(3)]


@pytest.fixture
def writer(engine: Engine) -> Iterator[SpanWriter]:
    writer = SpanWriter(engine, flush_interval_s=0.01)
    writer.start()
    yield writer
    writer.close()


@pytest.fixture
def records(engine: Engine, writer: SpanWriter) -> RunRecords:
    datasets = DatasetStore(engine)
    service = DatasetService(datasets)
    items = parse_items((str(i), doc) for i, doc in enumerate(QUESTIONS))
    service.push("golden", items, author=None, message=None, source=None)
    clock = iter(float(t) for t in range(2_000, 1_000_000))
    return RunRecords(EvalRunStore(engine), datasets, writer, clock=lambda: next(clock))


def new_run(**fields: Any) -> EvalRun:
    values: dict[str, Any] = {
        "run_id": "",
        "name": "candidate",
        "dataset": "golden",
        "dataset_version": 1,
        "task": {"kind": "prompt", "prompt": "rag_qa", "version": 3, "model": "fast"},
        "evaluators": ({"name": "exact", "type": "equals", "threshold": 1.0},),
        "repeat": 2,
        "status": "running",
        "started_at": 0.0,
        "suite": "rag",
    }
    values.update(fields)
    return EvalRun(**values)


def result(item_id: str, repetition: int = 0, **fields: Any) -> ItemResult:
    values: dict[str, Any] = {
        "item_id": item_id,
        "repetition": repetition,
        "output": f"answer to {item_id}",
        "latency_ms": 250.0,
        "cost_usd": 0.0001,
        "input_tokens": 12,
        "output_tokens": 5,
        "trace_id": new_trace_id(),
        "span_id": new_span_id(),
        "started_at": 1_700_000_000.0,
        "verdicts": {"exact": Verdict(1.0, True, "equal")},
    }
    values.update(fields)
    return ItemResult(**values)


def test_a_run_pins_a_stored_dataset_version(records: RunRecords) -> None:
    run = records.create(new_run())
    assert len(run.run_id) == 32 and run.status == "running" and run.started_at == 2000.0
    assert records.get(run.run_id) == run
    with pytest.raises(RunError, match="'golden' has no version 2 \\(its newest is v1\\)"):
        records.create(new_run(dataset_version=2))
    with pytest.raises(RunError, match="push it first"):
        records.create(new_run(dataset="nope"))
    with pytest.raises(RunNotFound):
        records.get("0" * 32)


def test_results_upsert_and_only_new_root_spans_are_recorded(
    records: RunRecords, engine: Engine, writer: SpanWriter
) -> None:
    run = records.create(new_run())
    failed = Verdict.failed("the judge's answer did not parse", raw="{oops")
    batch = [
        result("q0"),
        result("q1", error="task failed: 503", output=None, verdicts={"exact": failed}),
        result("q2", 1, cached=True, span_id=None),
    ]
    done = records.record(run.run_id, batch)
    assert (done.stored, done.spans) == (3, 2)
    again = records.record(run.run_id, batch)  # a retried batch: stored again, no new spans
    assert (again.stored, again.spans) == (3, 0)
    redo = result("q1", trace_id=new_trace_id(), span_id=new_span_id())
    assert records.record(run.run_id, [redo]).spans == 1  # re-run after an error

    stored = records.results(run.run_id, 100)
    assert [(r.item_id, r.repetition) for r in stored] == [("q0", 0), ("q1", 0), ("q2", 1)]
    assert stored[0] == batch[0]
    assert stored[1] == redo
    assert stored[2].cached and stored[2].span_id is None
    assert records.completed(run.run_id) == {("q0", 0), ("q1", 0), ("q2", 1)}
    first, *_ = records.results(run.run_id, 1)
    assert records.results(run.run_id, 10, (0, first.item_id))[0].item_id == "q1"

    assert writer.flush()
    spans = SpanRepository(engine)
    (root,) = spans.trace(batch[0].trace_id or "")
    assert (root.span_id, root.parent_span_id, root.name) == (batch[0].span_id, None,
                                                              "eval candidate")  # fmt: skip
    assert root.start_time == 1_700_000_000.0
    assert root.latency_ms == pytest.approx(250.0)
    assert root.input == {"question": "question 0"} and root.output == "answer to q0"
    assert root.tags == ["eval"] and root.status == "ok"
    assert root.attributes["keel.eval.run_id"] == run.run_id
    assert root.attributes["keel.eval.item_id"] == "q0"
    assert root.attributes["keel.eval.repetition"] == 0
    assert root.usage is None and root.cost_usd is None  # the task's own span carries those
    (errored,) = spans.trace(batch[1].trace_id or "")
    assert (errored.status, errored.error) == ("error", "task failed: 503")
    assert writer.stats().rejected == 0  # no span was sent twice


def test_results_must_name_items_and_repetitions_of_the_run(records: RunRecords) -> None:
    run = records.create(new_run())
    with pytest.raises(RunError, match=r"results\[1\]: item 'q9' is not in dataset 'golden' v1"):
        records.record(run.run_id, [result("q0"), result("q9")])
    with pytest.raises(RunError, match=r"repetition 2 is outside the run's 0..1"):
        records.record(run.run_id, [result("q0", 2)])
    with pytest.raises(RunError, match="in the batch twice"):
        records.record(run.run_id, [result("q0"), result("q0")])
    assert records.completed(run.run_id) == set()  # nothing of a refused batch is stored


def test_finishing_resuming_and_the_finished_run(records: RunRecords) -> None:
    run = records.create(new_run())
    interrupted = records.finish(run.run_id, "interrupted", None)
    assert (interrupted.status, interrupted.finished_at) == ("interrupted", 2001.0)
    resumed = records.record(run.run_id, [result("q0")])
    assert resumed.run.status == "running" and resumed.run.finished_at is None
    summary = {"exact": {"mean": 1.0, "pass_rate": 1.0, "n": 1}}
    finished = records.finish(run.run_id, "finished", summary)
    assert (finished.status, finished.summary) == ("finished", summary)
    with pytest.raises(RunConflict, match="is finished"):
        records.record(run.run_id, [result("q1")])
    with pytest.raises(RunError, match="a run ends as one of finished, failed, interrupted"):
        records.finish(run.run_id, "running", None)
    assert records.finish(run.run_id, "finished", None).summary == summary  # kept


def test_runs_list_newest_first_filtered_and_paged(records: RunRecords) -> None:
    made = [
        records.create(new_run(name=name, suite=suite, started_at=float(t)))
        for t, (name, suite) in enumerate(
            [("base", "rag"), ("cand", "rag"), ("base", "chat"), ("cand", "rag")], start=1
        )
    ]
    records.finish(made[0].run_id, "finished", None)
    ids = {run.run_id: n for n, run in enumerate(made)}

    def listed(where: RunFilter | None = None, after: Any = None) -> list[int]:
        return [ids[run.run_id] for run in records.list_runs(where or RunFilter(), 10, after)]

    assert listed() == [3, 2, 1, 0]
    assert listed(RunFilter(suite="rag")) == [3, 1, 0]
    assert listed(RunFilter(name="cand", suite="rag")) == [3, 1]
    assert listed(RunFilter(status="finished")) == [0]
    assert listed(RunFilter(dataset="other")) == []
    page = records.list_runs(RunFilter(), 2)
    assert listed(after=(page[-1].started_at, page[-1].run_id)) == [1, 0]
    assert replace(made[0], status="finished", finished_at=2000.0) == records.get(made[0].run_id)
