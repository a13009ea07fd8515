"""Online evaluation: which spans are sampled, and the scores that land on their traces."""

from __future__ import annotations

import asyncio

from keel.core.evaluation import Case, Verdict
from keel.core.ids import new_span_id, new_trace_id
from keel.core.scores import Score
from keel.core.spans import Span
from keel.evals.online import OnlineEvaluator, OnlineRule, SpanMatch, span_case
from keel.evals.registry import EvaluatorRegistry, EvaluatorSpec, Params, Services


def _evaluators(fail: bool = False):  # type: ignore[no-untyped-def]
    registry = EvaluatorRegistry()

    @registry.register("polite", threshold=0.5)
    def polite(params: Params, services: Services):  # type: ignore[no-untyped-def]
        async def check(case: Case) -> Verdict:
            if fail:
                raise ValueError("judge unavailable")
            score = 1.0 if "please" in case.output.lower() else 0.0
            return Verdict(score, explanation=f"asked {case.input!r}")

        return check

    return registry.build_all([EvaluatorSpec("polite")], Services())


def _span(output: str = "Yes, please wait.", **kw: object) -> Span:
    fields: dict[str, object] = {
        "trace_id": new_trace_id(),
        "span_id": new_span_id(),
        "name": "chat.completions",
        "kind": "generation",
        "start_time": 100.0,
        "end_time": 100.25,
        "alias": "fast",
        "input": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"}],
        "output": {"choices": [{"index": 0, "message": {"role": "assistant", "content": output}}]},
    }
    fields.update(kw)
    return Span(**fields)  # type: ignore[arg-type]


def test_a_span_reads_as_a_case() -> None:
    case = span_case(_span(cost_usd=0.002))
    assert case.input == "Hi?"
    assert case.output == "Yes, please wait."
    assert case.latency_ms == 250.0 and case.cost_usd == 0.002


def test_the_match_selects_successful_generations_outside_eval_traffic() -> None:
    match = SpanMatch(prompt="rag_qa", model="fast", tags=("prod",))
    good = _span(tags=["prod"], attributes={"keel.prompt.name": "rag_qa"})
    assert match.matches(good)
    assert not match.matches(_span(tags=["prod"], attributes={"keel.prompt.name": "other"}))
    assert not match.matches(_span(tags=[], attributes={"keel.prompt.name": "rag_qa"}))
    assert not match.matches(
        _span(tags=["prod", "eval"], attributes={"keel.prompt.name": "rag_qa"})
    )
    assert not match.matches(_span(status="error", tags=["prod"]))
    assert not SpanMatch().matches(_span(kind="embedding"))


def test_the_sample_is_about_the_rate_and_sticky_per_trace() -> None:
    rule = OnlineRule("r", SpanMatch(), 0.2, _evaluators())
    spans = [_span() for _ in range(5000)]
    picked = [rule.wants(s) for s in spans]
    assert 0.17 < sum(picked) / len(spans) < 0.23
    assert picked == [rule.wants(s) for s in spans]


async def test_sampled_spans_are_scored_in_the_background() -> None:
    stored: list[Score] = []
    online = OnlineEvaluator(
        [OnlineRule("politeness", SpanMatch(), 1.0, _evaluators())],
        stored.append,
        clock=lambda: 5.0,
    )
    online.start()
    polite, rude = _span(), _span(output="No.")
    online.offer(polite)
    online.offer(rude)
    online.offer(_span(tags=["eval"]))  # an eval run's own call
    await asyncio.wait_for(online.drain(), 5)
    await online.stop()
    by_trace = {s.trace_id: s for s in stored}
    assert set(by_trace) == {polite.trace_id, rude.trace_id}
    assert by_trace[polite.trace_id].value == 1.0 and by_trace[rude.trace_id].value == 0.0
    score = by_trace[polite.trace_id]
    assert score.source == "evaluator" and score.name == "polite"
    assert score.span_id == polite.span_id and score.created_at == 5.0
    assert "asked 'Hi?'" in (score.comment or "")
    assert online.stats.scored == 2 and online.stats.sampled == 2


async def test_a_failed_evaluation_is_stored_as_failed_not_as_a_number() -> None:
    stored: list[Score] = []
    online = OnlineEvaluator(
        [OnlineRule("p", SpanMatch(), 1.0, _evaluators(fail=True))], stored.append
    )
    online.start()
    online.offer(_span())
    await asyncio.wait_for(online.drain(), 5)
    await online.stop()
    (score,) = stored
    assert score.data_type == "categorical" and score.string_value == "failed"
    assert score.value is None and "judge unavailable" in (score.comment or "")
    assert online.stats.failed_evaluations == 1


async def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    online = OnlineEvaluator(
        [OnlineRule("p", SpanMatch(), 1.0, _evaluators())], lambda s: None, max_queue=3
    )
    for _ in range(5):
        online.offer(_span())
    assert online.stats.sampled == 3 and online.stats.dropped == 2
