"""User-defined evaluators: decorated functions, their return values, parameters and plugins."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from keel.core.evaluation import Case, Verdict
from keel.evals.custom import evaluator, load_plugin_file, register_functions
from keel.evals.registry import EvaluatorConfigError, EvaluatorRegistry, EvaluatorSpec, Services


def case(output: str, expected: Any = None) -> Case:
    return Case(input="question", output=output, expected=expected)


async def run(
    registry: EvaluatorRegistry, kind: str, output: str, negate: bool = False, **params: Any
) -> Verdict:
    built = registry.build(EvaluatorSpec(kind, params=params, negate=negate), Services())
    return await built.evaluate(case(output))


def registry_of(*functions: Any) -> EvaluatorRegistry:
    registry = EvaluatorRegistry()
    register_functions(registry, {f.__name__: f for f in functions})
    return registry


@evaluator
def mentions_source(case: Case) -> bool:
    """The answer cites a source."""
    return "[Source:" in case.output


@evaluator("word_budget", threshold=0.8, summary="Short answers score higher.")
def word_budget(case: Case, *, budget: int = 50) -> float:
    words = len(case.output.split())
    return 1.0 if words <= budget else budget / words


@evaluator()
def politeness(case: Case) -> tuple[float, str]:
    polite = "please" in case.output.lower()
    return (1.0, "says please") if polite else (0.0, "never says please")


@evaluator()
async def matches_expected(case: Case) -> Verdict:
    await asyncio.sleep(0)
    same = case.output == case.expected
    return Verdict(score=1.0 if same else 0.0, explanation="same" if same else "differs")


async def test_a_decorated_function_stays_a_plain_function() -> None:
    assert mentions_source(case("Paris [Source: atlas]")) is True
    assert word_budget(case("one two three"), budget=2) == pytest.approx(2 / 3)


async def test_bool_float_tuple_and_verdict_returns_become_verdicts() -> None:
    registry = registry_of(mentions_source, word_budget, politeness, matches_expected)
    assert registry.names() == ["matches_expected", "mentions_source", "politeness", "word_budget"]

    assert (await run(registry, "mentions_source", "Paris [Source: atlas]")).passed
    assert not (await run(registry, "mentions_source", "Paris")).passed

    long = await run(registry, "word_budget", " ".join(["word"] * 100))
    assert long.score == 0.5
    assert not long.passed  # the decorator's threshold, 0.8

    polite = await run(registry, "politeness", "Please wait")
    assert (polite.score, polite.explanation, polite.passed) == (1.0, "says please", True)
    rude = await run(registry, "politeness", "Wait.", negate=True)
    assert rude.passed
    assert rude.explanation == "negated: never says please"

    built = registry.build(EvaluatorSpec("matches_expected"), Services())
    verdict = await built.evaluate(case("Paris", expected="Paris"))
    assert (verdict.score, verdict.explanation, verdict.passed) == (1.0, "same", True)


async def test_the_decorator_sets_name_threshold_and_summary() -> None:
    registry = registry_of(mentions_source, word_budget)
    budget = registry.get("word_budget")
    assert (budget.threshold, budget.summary) == (0.8, "Short answers score higher.")
    source = registry.get("mentions_source")
    assert (source.threshold, source.summary) == (0.5, "The answer cites a source.")


async def test_keyword_parameters_come_from_the_spec_and_are_checked() -> None:
    registry = registry_of(word_budget)
    assert (await run(registry, "word_budget", "one two three", budget=2)).score == pytest.approx(
        2 / 3
    )
    with pytest.raises(
        EvaluatorConfigError, match=r"'word_budget': budget: must be an integer, not 'ten'"
    ):
        registry.build(EvaluatorSpec("word_budget", params={"budget": "ten"}), Services())
    with pytest.raises(
        EvaluatorConfigError, match=r"'word_budget': budget: must be an integer, not True"
    ):
        registry.build(EvaluatorSpec("word_budget", params={"budget": True}), Services())
    with pytest.raises(
        EvaluatorConfigError,
        match=r"'word_budget': budgt: unknown parameter \(did you mean 'budget'",
    ):
        registry.build(EvaluatorSpec("word_budget", params={"budgt": 10}), Services())


async def test_a_parameter_without_a_default_is_required() -> None:
    @evaluator()
    def has_keyword(case: Case, *, keyword: str) -> bool:
        return keyword in case.output

    registry = registry_of(has_keyword)
    with pytest.raises(EvaluatorConfigError, match=r"'has_keyword': keyword: is required"):
        registry.build(EvaluatorSpec("has_keyword"), Services())
    assert (await run(registry, "has_keyword", "a cat", keyword="cat")).passed


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (None, "evaluator 'broken' returned NoneType None; return a score in [0, 1], a bool"),
        ("0.9", "evaluator 'broken' returned str '0.9'; return a score"),
        (1.5, "evaluator 'broken' returned the score 1.5; return a score in [0, 1]"),
        (float("nan"), "evaluator 'broken' returned the score nan"),
        ((0.5, 7), "evaluator 'broken' returned tuple (0.5, 7)"),
        (Verdict(score=-1.0), "evaluator 'broken' returned the score -1.0"),
    ],
)
async def test_a_wrong_return_value_is_a_failed_evaluation_naming_the_function(
    returned: Any, message: str
) -> None:
    @evaluator()
    def broken(case: Case) -> Any:
        return returned

    verdict = await run(registry_of(broken), "broken", "anything")
    assert verdict.passed is False
    assert verdict.score is None
    assert verdict.error is not None
    assert verdict.error.startswith(message)


async def test_an_exception_is_a_failed_evaluation_naming_the_function() -> None:
    @evaluator()
    async def explodes(case: Case) -> float:
        raise KeyError("context")

    verdict = await run(registry_of(explodes), "explodes", "anything")
    assert verdict.error == "evaluator 'explodes' raised KeyError: 'context'"
    assert verdict.passed is False


async def test_slow_sync_evaluators_do_not_stall_each_other() -> None:
    @evaluator()
    def slow(case: Case) -> bool:
        time.sleep(0.3)  # a blocking call, e.g. a library without async
        return True

    built = registry_of(slow).build(EvaluatorSpec("slow"), Services())
    start = time.perf_counter()
    verdicts = await asyncio.gather(*(built.evaluate(case("x")) for _ in range(3)))
    assert all(v.passed for v in verdicts)
    assert time.perf_counter() - start < 0.75  # 0.9 s if they ran one after another


def test_a_function_that_cannot_take_the_case_is_refused_at_decoration() -> None:
    with pytest.raises(TypeError, match="the first parameter must take the Case"):

        @evaluator()
        def no_case() -> bool:
            return True

    with pytest.raises(TypeError, match=r"\*\*options is not supported"):

        @evaluator()
        def anything(case: Case, **options: Any) -> bool:
            return True

    with pytest.raises(ValueError, match="threshold must be between 0 and 1"):
        evaluator(threshold=5)


def test_register_functions_reads_a_module_and_refuses_a_taken_name() -> None:
    registry = EvaluatorRegistry()
    names = register_functions(registry, {"a": politeness, "alias": politeness, "b": len})
    assert names == ["politeness"]

    @evaluator("politeness")
    def other(case: Case) -> bool:
        return True

    with pytest.raises(EvaluatorConfigError, match=r"'politeness' .*other.* is already registered"):
        register_functions(registry, {"other": other})


PLUGIN = '''
from dataclasses import dataclass

from keel.evals.custom import evaluator


@dataclass
class Rule:
    word: str


BANNED = Rule("synergy")


@evaluator("no_buzzwords", threshold=1.0)
def no_buzzwords(case, *, extra: list = []):
    """No buzzwords in the answer."""
    found = [w for w in [BANNED.word, *extra] if w in case.output.lower()]
    return (0.0, f"uses {', '.join(found)}") if found else (1.0, "plain words")


def helper(case):
    return 1.0
'''


async def test_load_plugin_file_registers_its_decorated_functions(tmp_path: Path) -> None:
    path = tmp_path / "my_evals.py"
    path.write_text(PLUGIN)
    registry = EvaluatorRegistry()
    assert load_plugin_file(path, registry) == ["no_buzzwords"]
    assert registry.get("no_buzzwords").summary == "No buzzwords in the answer."
    verdict = await run(registry, "no_buzzwords", "Leverage synergy and pivot", extra=["pivot"])
    assert (verdict.passed, verdict.explanation) == (False, "uses synergy, pivot")


async def test_plugin_files_of_the_same_name_in_two_folders_both_load(tmp_path: Path) -> None:
    for folder, name in (("team_a", "tone_a"), ("team_b", "tone_b")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "evals.py").write_text(
            f"from keel.evals.custom import evaluator\n\n"
            f"@evaluator({name!r})\ndef check(case):\n    return True\n"
        )
    registry = EvaluatorRegistry()
    load_plugin_file(tmp_path / "team_a" / "evals.py", registry)
    load_plugin_file(tmp_path / "team_b" / "evals.py", registry)
    assert registry.names() == ["tone_a", "tone_b"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def broken(:\n    pass\n", "syntax error at line 1"),
        ("import not_a_module_anywhere\n", "importing it raised ModuleNotFoundError"),
        ("def plain(case):\n    return 1.0\n", "defines no evaluators; decorate a function"),
    ],
)
def test_a_plugin_that_cannot_load_says_why(tmp_path: Path, source: str, message: str) -> None:
    path = tmp_path / "plugin.py"
    path.write_text(source)
    with pytest.raises(
        EvaluatorConfigError, match=re.escape(f"evaluator plugin '{path}': {message}")
    ):
        load_plugin_file(path, EvaluatorRegistry())


def test_a_missing_or_non_python_plugin_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EvaluatorConfigError, match="no such file"):
        load_plugin_file(tmp_path / "missing.py", EvaluatorRegistry())
    notes = tmp_path / "evals.txt"
    notes.write_text("hello")
    with pytest.raises(EvaluatorConfigError, match=r"not a Python file \(expected a .py file\)"):
        load_plugin_file(notes, EvaluatorRegistry())
