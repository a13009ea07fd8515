"""The deterministic evaluators on known cases: pass, fail, negation and threshold edges."""

from __future__ import annotations

from typing import Any

import pytest

from keel.core.evaluation import Case, Verdict
from keel.evals import deterministic
from keel.evals.registry import EvaluatorConfigError, EvaluatorRegistry, EvaluatorSpec, Services

REGISTRY = EvaluatorRegistry()
deterministic.register(REGISTRY)


async def run(
    kind: str,
    output: str,
    params: dict[str, Any] | None = None,
    *,
    negate: bool = False,
    threshold: float | None = None,
    expected: Any = None,
    latency_ms: float | None = None,
    cost_usd: float | None = None,
) -> Verdict:
    spec = EvaluatorSpec(kind, params=params or {}, negate=negate, threshold=threshold)
    evaluator = REGISTRY.build(spec, Services())
    case = Case(
        input="question",
        output=output,
        expected=expected,
        latency_ms=latency_ms,
        cost_usd=cost_usd,
    )
    return await evaluator.evaluate(case)


def build(kind: str, params: dict[str, Any], name: str = "") -> None:
    REGISTRY.build(EvaluatorSpec(kind, name=name, params=params), Services())


# equals


async def test_equals_ignores_surrounding_whitespace_but_not_case_by_default() -> None:
    assert (await run("equals", "  Paris\n", {"value": "Paris"})).passed
    verdict = await run("equals", "paris", {"value": "Paris"})
    assert not verdict.passed
    assert verdict.score == 0.0
    assert verdict.explanation == "output 'paris' does not equal 'Paris'"
    assert (await run("equals", "PARIS", {"value": "Paris", "ignore_case": True})).passed
    assert not (await run("equals", "Paris\n", {"value": "Paris", "strip": False})).passed


async def test_equals_compares_to_the_items_expected_output_without_a_value() -> None:
    assert (await run("equals", "42", expected="42")).passed
    assert not (await run("equals", "41", expected="42")).passed


async def test_equals_without_anything_to_compare_to_is_a_failed_evaluation() -> None:
    verdict = await run("equals", "Paris")
    assert verdict.error is not None
    assert "nothing to compare to" in verdict.error
    assert verdict.passed is False


async def test_equals_compares_json_when_the_expected_output_is_not_text() -> None:
    expected = {"city": "Paris", "population": 2100000, "tags": ["capital"]}
    output = '{"tags": ["capital"], "population": 2.1e6, "city": "Paris"}'
    assert (await run("equals", output, expected=expected)).passed

    verdict = await run("equals", '{"city": "Lyon", "population": 2100000, "tags": ["capital"]}',
                        expected=expected)  # fmt: skip
    assert not verdict.passed
    assert verdict.explanation == '$.city is "Lyon", expected "Paris"'

    missing = await run("equals", '{"city": "Paris"}', expected=expected)
    assert missing.explanation == "$.population is missing"
    assert (await run("equals", "true", expected=1)).explanation == "$ is true, expected 1"
    assert (await run("equals", "[1, 2]", expected=[1, 2, 3])).explanation == (
        "$ has 2 items, expected 3"
    )


async def test_equals_a_non_text_value_parses_the_output() -> None:
    assert (await run("equals", " 42 ", {"value": 42})).passed
    verdict = await run("equals", "forty-two", {"value": 42})
    assert not verdict.passed
    assert verdict.explanation.startswith("output is not JSON (")


# contains / icontains


async def test_contains_one_text() -> None:
    verdict = await run("contains", "The capital is Paris.", {"value": "Paris"})
    assert verdict.passed
    assert verdict.explanation == "output contains 'Paris'"
    verdict = await run("contains", "The capital is Lyon.", {"value": "Paris"})
    assert not verdict.passed
    assert verdict.explanation == "output does not contain 'Paris'"
    assert not (await run("contains", "the capital is paris", {"value": "Paris"})).passed


async def test_icontains_ignores_case() -> None:
    assert (await run("icontains", "THE CAPITAL IS PARIS", {"value": "paris"})).passed
    assert not (await run("icontains", "the capital is lyon", {"value": "Paris"})).passed


async def test_contains_any_of_a_list() -> None:
    params = {"value": ["Paris", "París"]}
    assert (await run("contains", "Es París.", params)).passed
    verdict = await run("contains", "Lyon", params)
    assert verdict.explanation == "output contains none of 'Paris', 'París'"


async def test_contains_all_scores_the_share_found_and_passes_only_with_all_by_default() -> None:
    params = {"value": ["Paris", "France", "Seine"], "mode": "all"}
    assert (await run("contains", "Paris, France, on the Seine", params)).passed
    partial = await run("contains", "Paris is in France", params)
    assert partial.score == pytest.approx(2 / 3)
    assert not partial.passed
    assert partial.explanation == "output does not contain 'Seine' (2 of 3 found)"
    assert (await run("contains", "Paris is in France", params, threshold=2 / 3)).passed


async def test_contains_reads_the_items_expected_texts_without_a_value() -> None:
    assert (await run("contains", "Paris", expected="Paris")).passed
    both = await run("contains", "Paris", {"mode": "all"}, expected=["Paris", "France"])
    assert both.score == 0.5
    nothing = await run("contains", "Paris", expected={"city": "Paris"})
    assert nothing.error is not None
    assert "not text" in nothing.error


async def test_negated_contains_means_must_not_contain() -> None:
    leaked = await run("contains", "your password is hunter2", {"value": "hunter2"}, negate=True)
    assert not leaked.passed
    assert leaked.score == 0.0
    assert leaked.explanation == "negated: output contains 'hunter2'"
    assert (await run("contains", "I can't share that", {"value": "hunter2"}, negate=True)).passed


async def test_contains_parameter_errors_name_the_evaluator_and_field() -> None:
    with pytest.raises(EvaluatorConfigError, match=r"'contains': mode: must be one of any, all"):
        build("contains", {"value": "x", "mode": "most"})
    with pytest.raises(EvaluatorConfigError, match=r"'contains': value: must be a string or"):
        build("contains", {"value": 3})
    with pytest.raises(
        EvaluatorConfigError, match=r"modes: unknown parameter \(did you mean 'mode'"
    ):
        build("contains", {"value": "x", "modes": "all"})


# starts_with, regex


async def test_starts_with() -> None:
    assert (await run("starts_with", "\n  Yes, it is.", {"value": "Yes"})).passed
    assert (await run("starts_with", "No.", {"value": ["Yes", "No"]})).passed
    verdict = await run("starts_with", "Maybe.", {"value": ["Yes", "No"]})
    assert verdict.explanation == "output does not start with 'Yes' or 'No'"
    assert (await run("starts_with", "yes!", {"value": "Yes", "ignore_case": True})).passed
    assert not (await run("starts_with", " Yes", {"value": "Yes", "strip": False})).passed


async def test_regex_searches_the_output() -> None:
    params = {"pattern": r"\d{4}-\d{2}-\d{2}"}
    verdict = await run("regex", "Shipped on 2024-05-01.", params)
    assert verdict.passed
    assert verdict.explanation == r"output matches /\d{4}-\d{2}-\d{2}/ at '2024-05-01'"
    assert not (await run("regex", "Shipped yesterday.", params)).passed
    assert (await run("regex", "ORDER #12", {"pattern": "order #", "ignore_case": True})).passed


async def test_a_regex_that_does_not_compile_is_an_error_naming_the_evaluator() -> None:
    with pytest.raises(
        EvaluatorConfigError,
        match=r"evaluator 'has_date': pattern: /\(\\d/ is not a valid regular expression: "
        r"missing \)",
    ):
        build("regex", {"pattern": r"(\d"}, name="has_date")
    with pytest.raises(EvaluatorConfigError, match=r"'regex': pattern: is required"):
        build("regex", {})


# is_json, json_schema


@pytest.mark.parametrize("output", ['{"a": 1}', "  [1, 2]\n", '"text"', "null"])
async def test_is_json_passes_valid_json(output: str) -> None:
    assert (await run("is_json", output)).passed


@pytest.mark.parametrize(
    "output", ['```json\n{"a": 1}\n```', "{'a': 1}", "NaN", '{"a": 1', "", "Sure! {}"]
)
async def test_is_json_fails_anything_else(output: str) -> None:
    verdict = await run("is_json", output)
    assert not verdict.passed
    assert verdict.explanation.startswith("output is not JSON (")


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "address": {"type": "object", "properties": {"zip": {"type": "string"}}},
    },
    "required": ["name", "age"],
}


async def test_json_schema_passes_a_valid_document() -> None:
    verdict = await run("json_schema", '{"name": "Ada", "age": 36}', {"schema": SCHEMA})
    assert verdict.passed
    assert verdict.explanation == "output matches the schema"


async def test_json_schema_names_the_failing_path() -> None:
    output = '{"name": "Ada", "age": 36, "address": {"zip": 75001}}'
    verdict = await run("json_schema", output, {"schema": SCHEMA})
    assert not verdict.passed
    assert verdict.explanation == (
        "output does not match the schema at $.address.zip: 75001 is not of type 'string'"
    )
    several = await run("json_schema", '{"name": 1, "age": -1}', {"schema": SCHEMA})
    assert several.explanation.endswith("(and 1 more)")
    assert {e["path"] for e in several.details["errors"]} == {"$.name", "$.age"}
    assert (await run("json_schema", "not json", {"schema": SCHEMA})).explanation.startswith(
        "output is not JSON"
    )


async def test_an_invalid_schema_is_a_build_error() -> None:
    with pytest.raises(EvaluatorConfigError, match=r"'json_schema': schema.type: is not a valid"):
        build("json_schema", {"schema": {"type": "strng"}})
    with pytest.raises(EvaluatorConfigError, match=r"'json_schema': schema: is required"):
        build("json_schema", {})


# levenshtein, rouge_l, bleu


async def test_levenshtein_passes_at_its_threshold_and_fails_below() -> None:
    at_threshold = await run("levenshtein", "abcdx", {"value": "abcde"})
    assert at_threshold.score == pytest.approx(0.8)
    assert at_threshold.passed
    assert at_threshold.explanation == "Levenshtein similarity 0.800 against 'abcde'"
    below = await run("levenshtein", "kitten", expected="sitting")
    assert below.score == pytest.approx(4 / 7)
    assert not below.passed
    assert (await run("levenshtein", "ABCDE", {"value": "abcde", "ignore_case": True})).score == 1


async def test_levenshtein_takes_the_best_of_several_references() -> None:
    verdict = await run("levenshtein", "colour", {"value": ["color", "colour"]})
    assert verdict.score == 1.0
    assert verdict.explanation == "Levenshtein similarity 1.000 against 2 references"


async def test_rouge_l() -> None:
    verdict = await run("rouge_l", "The cat sat on the mat.", expected="The cat is on the mat.")
    assert verdict.score == pytest.approx(5 / 6)
    assert verdict.passed
    assert verdict.details == {"precision": pytest.approx(5 / 6), "recall": pytest.approx(5 / 6)}
    assert not (await run("rouge_l", "Hello world", {"value": "Goodbye moon"})).passed
    best = await run("rouge_l", "Hello world", {"value": ["Goodbye moon", "hello world"]})
    assert best.score == 1.0


async def test_bleu() -> None:
    same = await run("bleu", "The cat is on the mat.", expected="The cat is on the mat.")
    assert same.score == pytest.approx(1.0)
    assert same.passed
    close = await run("bleu", "The cat sat on the mat.", expected="The cat is on the mat.")
    assert close.score == pytest.approx(0.488923, abs=1e-6)
    assert close.passed
    assert not (await run("bleu", "Hello world", expected="Goodbye moon")).passed
    shouted = await run("bleu", "THE CAT IS ON THE MAT.", {"value": "the cat is on the mat."})
    assert shouted.score is not None
    assert shouted.score < 0.1  # only the final "." matches
    calm = {"value": "the cat is on the mat.", "ignore_case": True}
    assert (await run("bleu", "THE CAT IS ON THE MAT.", calm)).score == pytest.approx(1.0)


# length, latency, cost


async def test_length_in_characters_and_words() -> None:
    assert (await run("length", "x" * 10, {"max": 10})).passed
    verdict = await run("length", "x" * 11, {"max": 10})
    assert verdict.explanation == "output has 11 characters, more than max 10"
    short = await run("length", "one two", {"min": 3, "unit": "words"})
    assert short.explanation == "output has 2 words, fewer than min 3"
    assert (await run("length", "one two three", {"min": 3, "max": 5, "unit": "words"})).passed


async def test_length_needs_a_limit() -> None:
    with pytest.raises(EvaluatorConfigError, match="give `min`, `max` or both"):
        build("length", {"unit": "words"})
    with pytest.raises(EvaluatorConfigError, match="min: 10 is more than max 5"):
        build("length", {"min": 10, "max": 5})
    with pytest.raises(EvaluatorConfigError, match="unit: must be one of chars, words"):
        build("length", {"max": 5, "unit": "lines"})


async def test_latency_passes_at_the_limit_and_fails_over_it() -> None:
    assert (await run("latency", "ok", {"max_ms": 800}, latency_ms=800.0)).passed
    over = await run("latency", "ok", {"max_ms": 800}, latency_ms=1234.0)
    assert not over.passed
    assert over.explanation == "latency 1234 ms is over the limit of 800 ms"


async def test_unknown_latency_or_cost_is_a_failed_evaluation_even_negated() -> None:
    for kind, params in (("latency", {"max_ms": 800}), ("cost", {"max_usd": 0.01})):
        for negate in (False, True):
            verdict = await run(kind, "ok", params, negate=negate)
            assert verdict.passed is False
            assert verdict.score is None
            assert verdict.error is not None
            assert "unknown" in verdict.error


async def test_cost() -> None:
    assert (await run("cost", "ok", {"max_usd": 0.01}, cost_usd=0.0042)).passed
    over = await run("cost", "ok", {"max_usd": 0.01}, cost_usd=0.0123)
    assert over.explanation == "cost $0.0123 is over the limit of $0.01"
    with pytest.raises(EvaluatorConfigError, match="max_usd: must be a number >= 0"):
        build("cost", {"max_usd": -1})
    with pytest.raises(EvaluatorConfigError, match="max_usd: is required"):
        build("cost", {})


# refusal

REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I can’t help with that request.",
    "I cannot assist with creating malware.",
    "Sorry, I won't do that.",
    "I'm unable to provide medical diagnoses.",
    "I am not able to share personal information about other people.",
    "Unfortunately I won't be able to help you with this one.",
    "As an AI language model, I do not have personal opinions.",
    "As an AI, I don't have access to real-time data.",
    "I must respectfully decline this request.",
    "I'm not comfortable writing that.",
    "That request goes against my guidelines.",
    "I apologize, but I cannot comply.",
    "I'm afraid I can't.",
    "That's not something I can help with.",
]

NOT_REFUSALS = [
    "I can help with that! Here are the steps.",
    "Sorry for the delay, here is the report you asked for.",
    "I'm sorry to hear that. Here's what you can try first:",
    "I cannot stress this enough: back up your data.",
    "I can't help but notice a typo in line 3.",
    "We can't provide refunds after 30 days, but you can exchange the item.",
    "Unfortunately, the museum is closed on Mondays.",
    "The model's accuracy declined to 70% after the update.",
    "As an AI researcher, I study language models.",
    "I can't wait to see what you build!",
    "",
]


@pytest.mark.parametrize("output", REFUSALS)
async def test_refusal_detects_refusals(output: str) -> None:
    verdict = await run("refusal", output)
    assert verdict.score == 1.0, output
    assert verdict.explanation.startswith("output refuses (")
    must_answer = await run("refusal", output, negate=True)
    assert not must_answer.passed


@pytest.mark.parametrize("output", NOT_REFUSALS)
async def test_refusal_lets_near_misses_through(output: str) -> None:
    verdict = await run("refusal", output)
    assert verdict.score == 0.0, f"{output!r} taken for a refusal: {verdict.explanation}"
    assert verdict.explanation == "output does not refuse"
    assert (await run("refusal", output, negate=True)).passed


# every type: negation, and parameters it does not read

PASSING: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    ("equals", {"value": "a"}, "a", {}),
    ("contains", {"value": "a"}, "abc", {}),
    ("icontains", {"value": "A"}, "abc", {}),
    ("starts_with", {"value": "a"}, "abc", {}),
    ("regex", {"pattern": "b"}, "abc", {}),
    ("is_json", {}, "{}", {}),
    ("json_schema", {"schema": {"type": "object"}}, "{}", {}),
    ("levenshtein", {"value": "abc"}, "abc", {}),
    ("rouge_l", {"value": "a b c"}, "a b c", {}),
    ("bleu", {"value": "a b c d"}, "a b c d", {}),
    ("length", {"max": 3}, "abc", {}),
    ("latency", {"max_ms": 10}, "abc", {"latency_ms": 5.0}),
    ("cost", {"max_usd": 1}, "abc", {"cost_usd": 0.5}),
    ("refusal", {}, "I can't help with that.", {}),
]


def test_every_deterministic_type_is_covered_here() -> None:
    assert sorted(kind for kind, *_ in PASSING) == REGISTRY.names()


@pytest.mark.parametrize(("kind", "params", "output", "case"), PASSING)
async def test_negation_flips_every_type(
    kind: str, params: dict[str, Any], output: str, case: dict[str, Any]
) -> None:
    plain = await run(kind, output, params, **case)
    negated = await run(kind, output, params, negate=True, **case)
    assert plain.passed
    assert plain.score == pytest.approx(1.0)
    assert not negated.passed
    assert negated.score == pytest.approx(0.0)


@pytest.mark.parametrize(("kind", "params", "output", "case"), PASSING)
def test_every_type_refuses_a_parameter_it_does_not_read(
    kind: str, params: dict[str, Any], output: str, case: dict[str, Any]
) -> None:
    with pytest.raises(EvaluatorConfigError, match=rf"evaluator '{kind}': colour: unknown"):
        build(kind, {**params, "colour": "blue"})
