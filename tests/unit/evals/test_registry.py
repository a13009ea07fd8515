"""The evaluator registry: built-in types, lookups, parameter checks and what evaluate returns."""

from __future__ import annotations

import pytest

from keel.core.evaluation import Case, Verdict
from keel.evals.registry import (
    Check,
    EvaluatorConfigError,
    EvaluatorRegistry,
    EvaluatorSpec,
    Params,
    Services,
    builtin_registry,
)

DETERMINISTIC = {
    "bleu": 0.3,
    "contains": 1.0,
    "cost": 1.0,
    "equals": 1.0,
    "icontains": 1.0,
    "is_json": 1.0,
    "json_schema": 1.0,
    "latency": 1.0,
    "length": 1.0,
    "levenshtein": 0.8,
    "refusal": 1.0,
    "regex": 1.0,
    "rouge_l": 0.5,
    "starts_with": 1.0,
}


def test_the_builtin_registry_lists_the_deterministic_types_with_summaries() -> None:
    registry = builtin_registry()
    assert set(DETERMINISTIC) <= set(registry.names())
    for name, threshold in DETERMINISTIC.items():
        kind = registry.get(name)
        assert kind.threshold == threshold
        assert kind.summary, f"{name} has no summary"
        assert "\n" not in kind.summary


def test_an_unknown_type_suggests_the_closest_name() -> None:
    with pytest.raises(
        EvaluatorConfigError, match=r"unknown evaluator type 'contain'; did you mean"
    ):
        builtin_registry().get("contain")


def test_an_unknown_parameter_suggests_the_closest_known_one() -> None:
    spec = EvaluatorSpec("levenshtein", name="close_to_reference", params={"ignorecase": True})
    with pytest.raises(
        EvaluatorConfigError,
        match=r"evaluator 'close_to_reference': ignorecase: unknown parameter "
        r"\(did you mean 'ignore_case'\?\)",
    ):
        builtin_registry().build(spec, Services())


async def test_a_spec_threshold_overrides_the_types_default() -> None:
    registry = builtin_registry()
    case = Case(input="q", output="kitten", expected="sitting")  # similarity 4/7
    default = registry.build(EvaluatorSpec("levenshtein"), Services())
    lenient = registry.build(EvaluatorSpec("levenshtein", threshold=0.5), Services())
    assert default.threshold == 0.8
    assert not (await default.evaluate(case)).passed
    assert (await lenient.evaluate(case)).passed


async def test_a_check_that_raises_is_a_failed_verdict_not_an_exception() -> None:
    registry = EvaluatorRegistry()

    @registry.register("flaky")
    def build(params: Params, services: Services) -> Check:
        async def check(case: Case) -> Verdict:
            raise RuntimeError("judge unreachable")

        return check

    verdict = await registry.build(EvaluatorSpec("flaky"), Services()).evaluate(
        Case(input="q", output="a")
    )
    assert verdict.error == "RuntimeError: judge unreachable"
    assert verdict.passed is False


def test_two_evaluators_with_one_name_and_one_type_registered_twice_are_errors() -> None:
    registry = builtin_registry()
    with pytest.raises(EvaluatorConfigError, match="two evaluators are named 'is_json'"):
        registry.build_all([EvaluatorSpec("is_json"), EvaluatorSpec("is_json")], Services())
    specs = [EvaluatorSpec("is_json"), EvaluatorSpec("is_json", name="not_json", negate=True)]
    assert [e.name for e in registry.build_all(specs, Services())] == ["is_json", "not_json"]
    with pytest.raises(EvaluatorConfigError, match="'equals' is registered twice"):
        registry.register("equals")(registry.get("equals").build)
