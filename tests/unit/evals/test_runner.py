"""The runner against the fake upstream: concurrency, repetitions, failures, resume, cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from keel.core.datasets import DatasetItem, DatasetVersion
from keel.core.evaluation import Case, Verdict
from keel.evals.gateway_client import GatewayChatModel
from keel.evals.registry import EvaluatorRegistry, EvaluatorSpec, Params, Services
from keel.evals.response_cache import CachingChatModel, ResponseCache
from keel.evals.runner import Progress, Runner, RunSpec
from keel.evals.tasks import CallableTask, ModelTask
from keel.testing import FakeUpstream
from keel.testing.behavior import Behavior, Fault
from keel.testing.eval_store import MemoryRunStore


def _registry() -> EvaluatorRegistry:
    registry = EvaluatorRegistry()

    @registry.register("mentions", threshold=1.0)
    def mentions(params: Params, services: Services):  # type: ignore[no-untyped-def]
        word = params.text("word")

        async def check(case: Case) -> Verdict:
            found = word in case.output
            return Verdict(1.0 if found else 0.0, explanation=f"{word!r} found: {found}")

        return check

    return registry


def _dataset(n: int) -> DatasetVersion:
    items = tuple(DatasetItem(id=f"q{i}", input=f"question {i}") for i in range(n))
    return DatasetVersion("qa", 1, items, content_hash="h", created_at=0.0)


def _spec(model: GatewayChatModel | CachingChatModel, n: int = 6, **kw: object) -> RunSpec:
    evaluators = _registry().build_all(
        [EvaluatorSpec("mentions", params={"word": "question"})], Services()
    )
    return RunSpec(
        name="smoke",
        dataset=_dataset(n),
        task=ModelTask(model, "gpt-4o-mini"),
        evaluators=evaluators,
        **kw,  # type: ignore[arg-type]
    )


async def test_every_item_and_repetition_is_called_and_scored() -> None:
    async with FakeUpstream() as fake:
        model = GatewayChatModel(fake.url + "/v1")
        store = MemoryRunStore()
        seen: list[Progress] = []
        run = await Runner(store, on_progress=seen.append).run(_spec(model, repeat=2))
        model.close()
    results = await store.results(run.run_id)
    assert run.status == "finished"
    assert len(results) == 12 and fake.request_count == 12
    assert {(r.item_id, r.repetition) for r in results} == {
        (f"q{i}", rep) for i in range(6) for rep in (0, 1)
    }
    assert all(r.verdicts["mentions"].passed for r in results)
    assert results[0].output == "Echo: question 0"
    assert seen[-1].done == 12 and seen[-1].eta_s == 0.0
    # each call joined its item's trace, with the run, item and repetition as metadata
    by_trace = {r.trace_id: r for r in results}
    for request in fake.requests:
        trace_id = request.headers["traceparent"].split("-")[1]
        metadata = orjson.loads(request.headers["x-keel-metadata"])
        result = by_trace[trace_id]
        assert metadata == {
            "keel.eval.run_id": run.run_id,
            "keel.eval.item_id": result.item_id,
            "keel.eval.repetition": result.repetition,
        }
        assert request.headers["traceparent"].split("-")[2] == result.span_id


async def test_concurrency_limit_is_respected() -> None:
    async with FakeUpstream(default=Behavior(latency_s=0.05)) as fake:
        model = GatewayChatModel(fake.url + "/v1")
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, fake.in_flight)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        await Runner(MemoryRunStore()).run(_spec(model, n=20, concurrency=4))
        watcher.cancel()
        model.close()
    assert peak == 4


async def test_a_failed_task_call_is_recorded_and_the_run_goes_on() -> None:
    async with FakeUpstream() as fake:
        fake.enqueue(Fault.status(400, message="context too long"))
        model = GatewayChatModel(fake.url + "/v1")
        store = MemoryRunStore()
        run = await Runner(store).run(_spec(model, n=3, concurrency=1))
        model.close()
    results = await store.results(run.run_id)
    failed = [r for r in results if r.error is not None]
    assert len(failed) == 1 and "context too long" in (failed[0].error or "")
    verdict = failed[0].verdicts["mentions"]
    assert verdict.passed is False and verdict.score is None and verdict.error
    assert sum(r.verdicts["mentions"].passed is True for r in results) == 2


async def test_an_interrupted_run_resumes_where_it_stopped() -> None:
    async with FakeUpstream(default=Behavior(latency_s=0.02)) as fake:
        model = GatewayChatModel(fake.url + "/v1")
        store = MemoryRunStore()
        runner = Runner(store)
        spec = _spec(model, n=40, concurrency=2)
        attempt = asyncio.create_task(runner.run(spec))
        while fake.request_count < 10:  # noqa: ASYNC110 - the fake has no event to wait on
            await asyncio.sleep(0.01)
        attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await attempt
        (run_id,) = store.runs
        assert store.runs[run_id].status == "interrupted"
        kept = len(store.stored[run_id])
        assert 8 <= kept < 40
        calls_before = fake.request_count
        resumed = await runner.run(spec, resume=run_id)
        model.close()
    assert resumed.status == "finished"
    assert len(store.stored[run_id]) == 40
    # only the missing pairs were called again (plus at most the calls cut off in flight)
    assert fake.request_count - calls_before <= 40 - kept + 2


async def test_a_rerun_is_served_from_the_cache(tmp_path: Path) -> None:
    async with FakeUpstream() as fake:
        cache = ResponseCache(tmp_path / "cache.sqlite")
        model = CachingChatModel(GatewayChatModel(fake.url + "/v1"), cache)
        store = MemoryRunStore()
        first = await Runner(store).run(_spec(model, repeat=2))
        assert fake.request_count == 12
        cache.close()
        # a new process: the cache file is all that is left
        cache = ResponseCache(tmp_path / "cache.sqlite")
        model = CachingChatModel(GatewayChatModel(fake.url + "/v1"), cache)
        second = await Runner(store).run(_spec(model, repeat=2))
        assert fake.request_count == 12
        changed = await Runner(store).run(_spec(model, n=7, repeat=2))
        assert fake.request_count == 14  # only the new item's two repetitions
    a = await store.results(first.run_id)
    b = await store.results(second.run_id)
    assert [r.output for r in a] == [r.output for r in b]
    assert not any(r.cached for r in a) and all(r.cached for r in b)
    # a cached result links to the trace where the answer was made
    assert [r.latency_ms for r in a] == [r.latency_ms for r in b]
    assert sum(r.cached for r in await store.results(changed.run_id)) == 12


async def test_a_python_callable_is_a_task() -> None:
    def answer(question: str) -> dict[str, object]:
        return {"output": f"about the question: {question}", "context": ["doc text"]}

    evaluators = _registry().build_all(
        [EvaluatorSpec("mentions", params={"word": "question"})], Services()
    )
    store = MemoryRunStore()
    spec = RunSpec("py", _dataset(3), CallableTask(answer), evaluators)
    run = await Runner(store).run(spec)
    results = await store.results(run.run_id)
    assert results[0].output == "about the question: question 0"
    assert run.task["kind"] == "python" and run.task["function"].endswith(".answer")


async def test_an_unchanged_rerun_reuses_whole_results_and_a_changed_evaluator_reevaluates(
    tmp_path: Path,
) -> None:
    calls = {"checks": 0}
    registry = EvaluatorRegistry()

    @registry.register("mentions", threshold=1.0)
    def mentions(params: Params, services: Services):  # type: ignore[no-untyped-def]
        word = params.text("word")

        async def check(case: Case) -> Verdict:
            calls["checks"] += 1
            if word == "boom":
                raise ValueError("cannot judge")
            return Verdict(1.0 if word in case.output else 0.0)

        return check

    def spec(model: CachingChatModel, cache: ResponseCache, word: str) -> RunSpec:
        evaluators = registry.build_all(
            [EvaluatorSpec("mentions", params={"word": word})], Services()
        )
        task = ModelTask(model, "gpt-4o-mini")
        return RunSpec("r", _dataset(5), task, evaluators, cache=cache, cache_scope="here")

    async with FakeUpstream() as fake:
        cache = ResponseCache(tmp_path / "cache.sqlite")
        model = CachingChatModel(GatewayChatModel(fake.url + "/v1"), cache)
        store = MemoryRunStore()
        first = await Runner(store).run(spec(model, cache, "question"))
        assert (fake.request_count, calls["checks"]) == (5, 5)
        again = await Runner(store).run(spec(model, cache, "question"))
        assert (fake.request_count, calls["checks"]) == (5, 5)  # nothing called, nothing judged
        other = await Runner(store).run(spec(model, cache, "Echo"))
        assert (fake.request_count, calls["checks"]) == (5, 10)  # judged anew, answers cached
        await Runner(store).run(spec(model, cache, "boom"))
        await Runner(store).run(spec(model, cache, "boom"))
        assert calls["checks"] == 20  # a failed evaluation is not reused: tried again
    a, b = await store.results(first.run_id), await store.results(again.run_id)
    assert [r.verdicts for r in a] == [r.verdicts for r in b]
    assert all(r.cached for r in b) and not any(r.cached for r in a)
    assert [r.trace_id for r in a] == [r.trace_id for r in b]  # where the answer was made
    assert all(r.span_id is None for r in b)
    assert all(r.verdicts["mentions"].passed for r in await store.results(other.run_id))


async def test_a_store_that_refuses_results_stops_the_run_early() -> None:
    calls = 0

    async def answer(question: str) -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.001)
        return f"about {question}"

    class RefusingStore(MemoryRunStore):
        def add_results(self, run_id: str, results: object) -> asyncio.Future[None]:
            refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            refused.set_exception(RuntimeError("the server refused the results"))
            return refused

    evaluators = _registry().build_all(
        [EvaluatorSpec("mentions", params={"word": "question"})], Services()
    )
    spec = RunSpec("r", _dataset(2000), CallableTask(answer), evaluators, concurrency=4)
    with pytest.raises(RuntimeError, match="refused"):
        await Runner(RefusingStore()).run(spec)
    assert calls < 1000  # it stopped at the next batch, not after every item
