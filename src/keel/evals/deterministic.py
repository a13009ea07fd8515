"""The deterministic evaluators: checks on the output's text, structure, latency and cost.

Each type is a `build(params, services)` function that reads its parameters (anything it
does not read is refused by the registry) and returns the check. The text comparisons
(equals, contains, starts_with, levenshtein, rouge_l, bleu) compare to the `value`
parameter, or to the item's expected output when no `value` is given. Scores are in
[0, 1]; pass/fail and negation are the registry's (`keel.core.evaluation.judge`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema

from keel.core.evaluation import Case, Verdict
from keel.evals.registry import Build, Check, EvaluatorRegistry, Params, Services
from keel.evals.text_metrics import levenshtein_similarity, rouge_l, sentence_bleu


class CannotEvaluate(Exception):
    """This case cannot be evaluated (nothing to compare to, no latency reported, ...)."""


def _as_check(evaluate: Callable[[Case], Verdict]) -> Check:
    """An async check around a plain function; `CannotEvaluate` becomes a failed verdict."""

    async def check(case: Case) -> Verdict:
        try:
            return evaluate(case)
        except CannotEvaluate as exc:
            return Verdict.failed(str(exc))

    return check


def _quote(text: str, limit: int = 60) -> str:
    """A text for an explanation: quoted, and cut in the middle when long."""
    if len(text) > limit:
        text = f"{text[: limit // 2]}…{text[-limit // 2 :]}"
    return repr(text)


def _passed(ok: bool, yes: str, no: str) -> Verdict:
    return Verdict(score=1.0 if ok else 0.0, explanation=yes if ok else no)


class _References:
    """The texts a check compares to: the `value` parameter, else the item's expected."""

    def __init__(self, params: Params) -> None:
        self._given = params.texts("value") if params.has("value") else None

    def of(self, case: Case) -> list[str]:
        if self._given is not None:
            return self._given
        expected = case.expected
        if isinstance(expected, str):
            return [expected]
        if isinstance(expected, list) and expected and all(isinstance(e, str) for e in expected):
            return list(expected)
        got = "no expected output" if expected is None else "an expected output that is not text"
        raise CannotEvaluate(f"nothing to compare to: no `value` parameter and the item has {got}")


def parse_json(text: str) -> Any:
    """Strict JSON (no NaN or Infinity); ValueError says where it stopped parsing."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not valid JSON")

    return json.loads(text, parse_constant=refuse)


def json_difference(got: Any, want: Any, path: str = "$") -> str | None:
    """Where two JSON values differ (None when equal); true is not 1, 1 is 1.0."""
    if isinstance(got, Mapping) and isinstance(want, Mapping):
        for key in want:
            if key not in got:
                return f"{path}.{key} is missing"
        for key in got:
            if key not in want:
                return f"{path}.{key} is not expected"
        for key in want:
            found = json_difference(got[key], want[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(got, list) and isinstance(want, list):
        if len(got) != len(want):
            return f"{path} has {len(got)} items, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            found = json_difference(g, w, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(got, bool) or isinstance(want, bool):
        same = type(got) is type(want) and got == want
    elif isinstance(got, int | float) and isinstance(want, int | float):
        same = got == want
    else:
        same = type(got) is type(want) and got == want
    if same:
        return None
    return f"{path} is {_json_text(got)}, expected {_json_text(want)}"


def _json_text(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else f"{text[:57]}..."


def build_equals(params: Params, services: Services) -> Check:
    """The output equals `value` (or the expected output); JSON values compare as JSON."""
    given = params.has("value")
    value = params.raw("value")
    ignore_case = params.flag("ignore_case", False)
    strip = params.flag("strip", True)

    def text(s: str) -> str:
        s = s.strip() if strip else s
        return s.casefold() if ignore_case else s

    def evaluate(case: Case) -> Verdict:
        want = value if given else case.expected
        if not given and want is None:
            raise CannotEvaluate("nothing to compare to: no `value` and no expected output")
        if isinstance(want, str):
            return _passed(
                text(case.output) == text(want),
                f"output equals {_quote(want)}",
                f"output {_quote(case.output)} does not equal {_quote(want)}",
            )
        try:
            got = parse_json(case.output)
        except ValueError as exc:
            return Verdict(score=0.0, explanation=f"output is not JSON ({exc})")
        difference = json_difference(got, want)
        return _passed(difference is None, "output equals the expected JSON", str(difference))

    return _as_check(evaluate)


def _containment(params: Params, fold: bool) -> Check:
    references = _References(params)
    mode = params.choice("mode", ("any", "all"), "any")

    def evaluate(case: Case) -> Verdict:
        wanted = references.of(case)
        output = case.output.casefold() if fold else case.output
        found = [w for w in wanted if (w.casefold() if fold else w) in output]
        missing = [w for w in wanted if w not in found]
        listed = ", ".join(_quote(w) for w in (missing or found))
        if mode == "any":
            if found:
                return Verdict(score=1.0, explanation=f"output contains {_quote(found[0])}")
            lead = "output does not contain" if len(wanted) == 1 else "output contains none of"
            return Verdict(score=0.0, explanation=f"{lead} {listed}")
        if not missing:
            return Verdict(score=1.0, explanation=f"output contains all of {listed}")
        return Verdict(
            score=len(found) / len(wanted),
            explanation=f"output does not contain {listed} ({len(found)} of {len(wanted)} found)",
        )

    return _as_check(evaluate)


def build_contains(params: Params, services: Services) -> Check:
    """The output contains `value` (one text or a list, `mode` any or all)."""
    return _containment(params, fold=False)


def build_icontains(params: Params, services: Services) -> Check:
    """`contains`, ignoring case."""
    return _containment(params, fold=True)


def build_starts_with(params: Params, services: Services) -> Check:
    """The output starts with `value` (or any of a list), after leading whitespace."""
    references = _References(params)
    ignore_case = params.flag("ignore_case", False)
    strip = params.flag("strip", True)

    def evaluate(case: Case) -> Verdict:
        prefixes = references.of(case)
        output = case.output.lstrip() if strip else case.output
        if ignore_case:
            output = output.casefold()
        for prefix in prefixes:
            if output.startswith(prefix.casefold() if ignore_case else prefix):
                return Verdict(score=1.0, explanation=f"output starts with {_quote(prefix)}")
        listed = " or ".join(_quote(p) for p in prefixes)
        return Verdict(score=0.0, explanation=f"output does not start with {listed}")

    return _as_check(evaluate)


def build_regex(params: Params, services: Services) -> Check:
    """The output matches the regular expression `pattern` (anywhere in it)."""
    source = params.text("pattern")
    flags = re.IGNORECASE if params.flag("ignore_case", False) else 0
    try:
        pattern = re.compile(source, flags)
    except re.error as exc:
        raise params.error(
            "pattern", f"/{source}/ is not a valid regular expression: {exc}"
        ) from None

    def evaluate(case: Case) -> Verdict:
        match = pattern.search(case.output)
        if match is None:
            return Verdict(score=0.0, explanation=f"output does not match /{source}/")
        return Verdict(
            score=1.0, explanation=f"output matches /{source}/ at {_quote(match.group(0))}"
        )

    return _as_check(evaluate)


def build_is_json(params: Params, services: Services) -> Check:
    """The output is valid JSON (surrounding whitespace allowed, code fences not)."""

    def evaluate(case: Case) -> Verdict:
        try:
            parse_json(case.output)
        except ValueError as exc:
            return Verdict(score=0.0, explanation=f"output is not JSON ({exc})")
        return Verdict(score=1.0, explanation="output is JSON")

    return _as_check(evaluate)


def build_json_schema(params: Params, services: Services) -> Check:
    """The output is JSON valid against `schema` (a JSON Schema object)."""
    schema = params.raw("schema")
    if not isinstance(schema, Mapping):
        raise params.error("schema", "is required: a JSON Schema object")
    schema = dict(schema)
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = exc.json_path.removeprefix("$")
        raise params.error(f"schema{where}", f"is not a valid JSON Schema: {exc.message}") from None
    validator = validator_class(schema)

    def evaluate(case: Case) -> Verdict:
        try:
            document = parse_json(case.output)
        except ValueError as exc:
            return Verdict(score=0.0, explanation=f"output is not JSON ({exc})")
        errors = sorted(validator.iter_errors(document), key=lambda e: e.json_path)
        if not errors:
            return Verdict(score=1.0, explanation="output matches the schema")
        first = jsonschema.exceptions.best_match(errors)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return Verdict(
            score=0.0,
            explanation=f"output does not match the schema at {first.json_path}: "
            f"{first.message}{more}",
            details={"errors": [{"path": e.json_path, "message": e.message} for e in errors[:20]]},
        )

    return _as_check(evaluate)


def _similarity(
    params: Params, name: str, score: Callable[[str, list[str]], tuple[float, dict[str, Any]]]
) -> Check:
    references = _References(params)

    def evaluate(case: Case) -> Verdict:
        wanted = references.of(case)
        value, details = score(case.output, wanted)
        versus = _quote(wanted[0]) if len(wanted) == 1 else f"{len(wanted)} references"
        return Verdict(
            score=value, explanation=f"{name} {value:.3f} against {versus}", details=details
        )

    return _as_check(evaluate)


def build_levenshtein(params: Params, services: Services) -> Check:
    """Character edit similarity to `value` (1 - distance / longer length), the best ref."""
    fold = params.flag("ignore_case", False)

    def score(output: str, wanted: list[str]) -> tuple[float, dict[str, Any]]:
        def prepare(s: str) -> str:
            return s.strip().casefold() if fold else s.strip()

        return max(levenshtein_similarity(prepare(output), prepare(w)) for w in wanted), {}

    return _similarity(params, "Levenshtein similarity", score)


def build_rouge_l(params: Params, services: Services) -> Check:
    """ROUGE-L F-measure (longest common subsequence of words) against the best reference."""

    def score(output: str, wanted: list[str]) -> tuple[float, dict[str, Any]]:
        best = max((rouge_l(output, w) for w in wanted), key=lambda o: o.fmeasure)
        return best.fmeasure, {"precision": best.precision, "recall": best.recall}

    return _similarity(params, "ROUGE-L", score)


def build_bleu(params: Params, services: Services) -> Check:
    """Sentence BLEU (smoothed, up to 4-grams) against the reference(s)."""
    lowercase = params.flag("ignore_case", False)

    def score(output: str, wanted: list[str]) -> tuple[float, dict[str, Any]]:
        return sentence_bleu(output, wanted, lowercase=lowercase), {}

    return _similarity(params, "BLEU", score)


_UNITS: dict[str, Callable[[str], int]] = {
    "chars": len,
    "words": lambda text: len(text.split()),
}
_UNIT_NAMES = {"chars": "characters", "words": "words"}


def build_length(params: Params, services: Services) -> Check:
    """The output's length is within `min` and/or `max`, in `unit` chars or words."""
    low = params.optional_number("min")
    high = params.optional_number("max")
    unit = params.choice("unit", tuple(_UNITS), "chars")
    if low is None and high is None:
        raise params.error("max", "give `min`, `max` or both")
    if low is not None and high is not None and low > high:
        raise params.error("min", f"{low:g} is more than max {high:g}")
    measure, unit_name = _UNITS[unit], _UNIT_NAMES[unit]

    def evaluate(case: Case) -> Verdict:
        size = measure(case.output)
        details = {"length": size, "unit": unit}
        if low is not None and size < low:
            why = f"output has {size} {unit_name}, fewer than min {low:g}"
            return Verdict(score=0.0, explanation=why, details=details)
        if high is not None and size > high:
            why = f"output has {size} {unit_name}, more than max {high:g}"
            return Verdict(score=0.0, explanation=why, details=details)
        return Verdict(score=1.0, explanation=f"output has {size} {unit_name}", details=details)

    return _as_check(evaluate)


def _limit(params: Params, key: str) -> float:
    limit = params.number(key)
    if not math.isfinite(limit) or limit < 0:
        raise params.error(key, "must be a number >= 0")
    return limit


def build_latency(params: Params, services: Services) -> Check:
    """The task answered within `max_ms` milliseconds; unknown latency is a failure."""
    limit = _limit(params, "max_ms")

    def evaluate(case: Case) -> Verdict:
        if case.latency_ms is None:
            raise CannotEvaluate("latency unknown: the task reported no latency")
        return _passed(
            case.latency_ms <= limit,
            f"latency {case.latency_ms:.0f} ms is within {limit:g} ms",
            f"latency {case.latency_ms:.0f} ms is over the limit of {limit:g} ms",
        )

    return _as_check(evaluate)


def build_cost(params: Params, services: Services) -> Check:
    """The task's call cost no more than `max_usd` dollars; unknown cost is a failure."""
    limit = _limit(params, "max_usd")

    def evaluate(case: Case) -> Verdict:
        if case.cost_usd is None:
            raise CannotEvaluate(
                "cost unknown: the task reported no cost (a model without a price?)"
            )
        return _passed(
            case.cost_usd <= limit,
            f"cost ${case.cost_usd:.6g} is within ${limit:g}",
            f"cost ${case.cost_usd:.6g} is over the limit of ${limit:g}",
        )

    return _as_check(evaluate)


# A refusal is the model declining the request, said in the first person: "I can't help
# with that", "I'm unable to provide", "I must decline", "As an AI language model".
# Deliberately not matched: "we can't" (a support bot stating a policy), "I can't help but
# notice", "I cannot stress enough", an apology that goes on to answer.
_I_CANNOT = (
    r"\bi(?: cannot| can not| can't| won't| will not|(?: won't| will not) be able to"
    r"| am (?:unable|not able|not allowed|not permitted) to"
    r"|'m (?:unable|not able|not allowed|not permitted) to)"
)
_REFUSALS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        _I_CANNOT + r" (?:help(?! but\b)|assist|provide|comply|fulfill?|answer|respond|create"
        r"|generate|write|produce|share|give|support|engage|participate|continue|complete"
        r"|discuss|disclose|reveal|do that|do this)\b",
        r"\bi (?:cannot|can not|can't|won't|will not)(?: do (?:that|this|it))?(?: for you)?[.!]",
        r"\bnot something i (?:can|am able to|'m able to|will) (?:help|assist|do|provide)",
        r"\bi(?: must| have to| need to| will|'ll)?(?: respectfully| politely)? decline\b",
        r"\bi(?:'m| am) not comfortable (?:helping|assisting|providing|writing|creating"
        r"|generating|doing|sharing|with)\b",
        r"\b(?:against|violates?|outside) (?:my|our) (?:ethical )?(?:guidelines|polic(?:y|ies)"
        r"|usage polic(?:y|ies)|content polic(?:y|ies)|programming|principles)\b",
        r"\bas an ai (?:language )?model\b",
        r"\bas an ai(?: assistant)?, i (?:cannot|can not|can't|don't|do not|am not|'m not)\b",
    )
)


def find_refusal(text: str) -> str | None:
    """The refusal phrase in `text`, or None when it does not refuse."""
    normalized = " ".join(text.replace("\u2019", "'").replace("\u2018", "'").split())
    for pattern in _REFUSALS:
        match = pattern.search(normalized)
        if match:
            return match.group(0)
    return None


def build_refusal(params: Params, services: Services) -> Check:
    """Score 1 when the output refuses ("I can't help with that"); negate for "must answer"."""

    def evaluate(case: Case) -> Verdict:
        phrase = find_refusal(case.output)
        if phrase is None:
            return Verdict(score=0.0, explanation="output does not refuse")
        return Verdict(
            score=1.0, explanation=f"output refuses ({_quote(phrase)})", details={"matched": phrase}
        )

    return _as_check(evaluate)


# name, build, default threshold. The similarity thresholds are starting points to
# calibrate on a team's own data: 0.8 Levenshtein tolerates small typos and formatting,
# 0.5 ROUGE-L asks for half the reference's words in order, 0.3 sentence BLEU is a
# close paraphrase.
_TYPES: tuple[tuple[str, Build, float], ...] = (
    ("equals", build_equals, 1.0),
    ("contains", build_contains, 1.0),
    ("icontains", build_icontains, 1.0),
    ("starts_with", build_starts_with, 1.0),
    ("regex", build_regex, 1.0),
    ("is_json", build_is_json, 1.0),
    ("json_schema", build_json_schema, 1.0),
    ("levenshtein", build_levenshtein, 0.8),
    ("rouge_l", build_rouge_l, 0.5),
    ("bleu", build_bleu, 0.3),
    ("length", build_length, 1.0),
    ("latency", build_latency, 1.0),
    ("cost", build_cost, 1.0),
    ("refusal", build_refusal, 1.0),
)


def register(registry: EvaluatorRegistry) -> None:
    """Register this module's evaluator types."""
    for name, build, threshold in _TYPES:
        summary = (build.__doc__ or "").strip()
        registry.register(name, threshold=threshold, summary=summary)(build)
