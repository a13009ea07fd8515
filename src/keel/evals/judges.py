"""LLM-as-judge evaluators: rubric scoring, G-Eval probability weighting, pairwise comparison.

- `llm_rubric` asks the judge to grade the answer against a rubric, on a 1–5 scale
  (normalised to (s - 1) / 4) or as pass/fail, with its reason as the explanation.
- `g_eval` grades 1–5 like the rubric but asks for the answer's token logprobs and scores
  the probability-weighted mean of "1".."5" at the score token (Liu et al. 2023, G-Eval), so
  a judge torn between 3 and 4 gives 3.5 instead of whichever it sampled. Without logprobs
  it falls back to the parsed score and says so in `details["weighting"]`.
- `pairwise` shows the judge the answer and a reference (the run being compared against,
  `metadata["baseline_output"]`, else the item's expected output) in both orders: a win is 1,
  a tie 0.5, a loss 0, averaged over the two orders. When the orders disagree the judge is
  swayed by position; that is reported in the explanation and `details`.

Every call goes through `Judge.ask` (strict JSON, retried, failures recorded as such).
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from typing import Any

from keel.core.evaluation import Case, Verdict
from keel.evals.judge_call import (
    AnswerSchema,
    JudgeAnswer,
    Prompt,
    documents_text,
    expected_text,
    judge_details,
    judge_from,
    judged,
    strict_object,
    trace_link,
)
from keel.evals.registry import Check, EvaluatorRegistry, Params, Services

G_EVAL_TOP_LOGPROBS = 5
SCORES = (1, 2, 3, 4, 5)

_REASON = {"type": "string", "description": "A short justification, written first."}
GRADE = AnswerSchema(
    "grade", strict_object(reason=_REASON, score={"type": "integer", "enum": list(SCORES)})
)
PASS_FAIL = AnswerSchema(
    "pass_fail", strict_object(reason=_REASON, verdict={"type": "string", "enum": ["pass", "fail"]})
)
PREFERENCE = AnswerSchema(
    "preference",
    strict_object(reason=_REASON, winner={"type": "string", "enum": ["A", "B", "tie"]}),
)

_SCALE_1_5 = (
    "Grade on a scale of 1 to 5: 1 = does not meet the criteria at all; 2 = mostly fails "
    "them; 3 = meets them in part, with clear problems; 4 = meets them with minor problems; "
    "5 = fully meets them. First write a short reason, then the score."
)
_SCORE_FIELD = re.compile(r'"score"\s*:\s*([1-5])')


def normalise(score: float) -> float:
    """A 1–5 grade on the [0, 1] scale."""
    return (score - 1.0) / 4.0


def case_prompt(case: Case, instructions: str) -> Prompt:
    """The task: instructions, then the question, context, reference answer and answer."""
    prompt = Prompt().add(instructions).data("question", case.input_text)
    if case.context:
        prompt.data("context", documents_text(case.context))
    prompt.data("reference_answer", expected_text(case.expected))
    return prompt.data("answer", case.output)


# -- llm_rubric ------------------------------------------------------------------------------


def build_rubric(params: Params, services: Services) -> Check:
    """Grade the answer against a rubric (1–5 or pass/fail) with a judge model."""
    rubric = params.text("rubric")
    scale = params.choice("scale", ("1-5", "pass_fail"), "1-5")
    judge = judge_from(params, services)
    pass_fail = scale == "pass_fail"
    scale_text = (
        "Decide whether the answer passes: it passes only if it meets every requirement of "
        "the rubric. First write a short reason, then the verdict."
        if pass_fail
        else _SCALE_1_5
    )
    instructions = (
        "Evaluate the answer to the question against this rubric. A reference answer, when "
        f"given, shows what a good answer contains.\n\nRubric:\n{rubric}\n\n{scale_text}"
    )

    async def check(case: Case) -> Verdict:
        task = case_prompt(case, instructions).text()
        schema = PASS_FAIL if pass_fail else GRADE
        got = await judge.ask(task, schema, link=trace_link(case))
        reason = str(got.data["reason"])
        details = judge_details(judge.model_name, [got])
        if pass_fail:
            passed = got.data["verdict"] == "pass"
            details["verdict"] = got.data["verdict"]
            return Verdict(1.0 if passed else 0.0, passed, reason, details=details)
        grade = int(got.data["score"])
        return Verdict(normalise(grade), explanation=reason, details={**details, "grade": grade})

    return judged(check)


# -- g_eval ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Weighting:
    """The score distribution read from the score token's logprobs."""

    expected: float
    distribution: dict[str, float]
    probability_mass: float


def weighted_grade(answer: JudgeAnswer) -> Weighting | str:
    """The probability-weighted 1–5 grade at the score token, or why there is none."""
    tokens = answer.answer.logprobs
    if not tokens:
        return "the judge returned no logprobs"
    texts = [str(t.get("token", "")) for t in tokens]
    matches = list(_SCORE_FIELD.finditer("".join(texts)))
    if not matches:
        return "the score was not found in the judge's tokens"
    position, start = matches[-1].start(1), 0
    for token, text in zip(tokens, texts, strict=True):
        if start <= position < start + len(text):
            return _distribution(token, text, position - start)
        start += len(text)
    return "the score was not found in the judge's tokens"  # pragma: no cover - by construction


def _distribution(token: dict[str, Any], text: str, at: int) -> Weighting | str:
    """Alternatives that differ from `text` only in the digit at `at`, as grade -> prob."""
    candidates: dict[int, float] = {}
    alternatives = token.get("top_logprobs") or []
    for alt in [*alternatives, {"token": text, "logprob": token.get("logprob")}]:
        alt_text, logprob = alt.get("token"), alt.get("logprob")
        if not isinstance(alt_text, str) or not isinstance(logprob, int | float):
            continue
        same_frame = len(alt_text) == len(text) and (
            alt_text[:at] == text[:at] and alt_text[at + 1 :] == text[at + 1 :]
        )
        if same_frame and alt_text[at] in "12345":
            candidates.setdefault(int(alt_text[at]), math.exp(logprob))
    mass = sum(candidates.values())
    if mass <= 0.0:
        return "the score token's logprobs give no probability to any grade"
    distribution = {str(g): candidates.get(g, 0.0) / mass for g in SCORES}
    expected = sum(g * p for g, p in zip(SCORES, distribution.values(), strict=True))
    return Weighting(expected, distribution, mass)


def build_g_eval(params: Params, services: Services) -> Check:
    """Grade 1–5 against criteria, weighting the grade by the judge's token probabilities."""
    criteria = params.text("criteria")
    steps = params.texts("steps") if params.has("steps") else []
    judge = judge_from(params, services)
    listed = "".join(f"\n{n}. {s}" for n, s in enumerate(steps, 1))
    instructions = f"Evaluate the answer to the question.\n\nCriteria:\n{criteria}" + (
        f"\n\nEvaluation steps:{listed}" if steps else ""
    )
    instructions += "\n\n" + _SCALE_1_5

    async def check(case: Case) -> Verdict:
        task = case_prompt(case, instructions).text()
        got = await judge.ask(task, GRADE, link=trace_link(case), top_logprobs=G_EVAL_TOP_LOGPROBS)
        grade = int(got.data["score"])
        details: dict[str, Any] = judge_details(judge.model_name, [got]) | {"grade": grade}
        weighting = weighted_grade(got)
        reason = str(got.data["reason"])
        if isinstance(weighting, str):
            details["weighting"] = f"none: {weighting}; the parsed grade is used"
            return Verdict(normalise(grade), explanation=reason, details=details)
        details |= {
            "weighting": "logprobs",
            "expected_grade": weighting.expected,
            "distribution": weighting.distribution,
            "probability_mass": weighting.probability_mass,
        }
        explanation = f"expected grade {weighting.expected:.2f} (sampled {grade}): {reason}"
        return Verdict(normalise(weighting.expected), explanation=explanation, details=details)

    return judged(check)


# -- pairwise --------------------------------------------------------------------------------

_DEFAULT_CRITERIA = (
    "Which response answers the question better: more correct, complete and relevant, "
    "and clearer? Prefer neither for its length, its style or its position."
)
# winner -> the score of the response shown as A; B's is 1 - that.
_A_SCORE = {"A": 1.0, "tie": 0.5, "B": 0.0}
_RESULT = {1.0: "win", 0.5: "tie", 0.0: "loss"}


def reference_of(case: Case) -> tuple[str, str] | None:
    """What the answer is compared with, and where it came from."""
    baseline = case.metadata.get("baseline_output")
    if isinstance(baseline, str):
        return baseline, "baseline_output"
    expected = expected_text(case.expected)
    return (expected, "expected") if expected is not None else None


def build_pairwise(params: Params, services: Services) -> Check:
    """Compare the answer with a reference in both orders; 1 win, 0.5 tie, 0 loss."""
    criteria = params.text("criteria", _DEFAULT_CRITERIA)
    judge = judge_from(params, services)
    instructions = (
        "Two responses, A and B, answer the same question. Compare them.\n\n"
        f"Criteria:\n{criteria}\n\nFirst write a short reason, then the winner: A, B, or "
        "tie when neither is better."
    )

    def task(case: Case, first: str, second: str) -> str:
        prompt = Prompt().add(instructions).data("question", case.input_text)
        if case.context:
            prompt.data("context", documents_text(case.context))
        return prompt.data("response_A", first).data("response_B", second).text()

    async def check(case: Case) -> Verdict:
        found = reference_of(case)
        if found is None:
            return Verdict.failed(
                "pairwise needs something to compare with: the item has no expected output "
                "and the case no metadata.baseline_output"
            )
        reference, source = found
        link = trace_link(case)
        forward, backward = await asyncio.gather(
            judge.ask(task(case, case.output, reference), PREFERENCE, link=link, about="order A/B"),
            judge.ask(task(case, reference, case.output), PREFERENCE, link=link, about="order B/A"),
        )
        return _preference(forward, backward, source, judge.model_name)

    return judged(check)


def _preference(forward: JudgeAnswer, backward: JudgeAnswer, source: str, model: str) -> Verdict:
    first = _A_SCORE[forward.data["winner"]]  # the answer was shown as A
    second = 1.0 - _A_SCORE[backward.data["winner"]]  # the answer was shown as B
    score = (first + second) / 2.0
    consistent = first == second
    orders = [
        {"shown": "answer as A", **forward.data, "result": _RESULT[first]},
        {"shown": "answer as B", **backward.data, "result": _RESULT[second]},
    ]
    details: dict[str, Any] = judge_details(model, [forward, backward]) | {
        "reference": source,
        "orders": orders,
        "position_consistent": consistent,
        "position_bias": None,
    }
    if consistent:
        explanation = (
            f"{_RESULT[first]} against the {source} in both orders: {forward.data['reason']}"
        )
    else:
        bias = {"A": "first", "B": "second"}.get(forward.data["winner"])
        same_slot = forward.data["winner"] == backward.data["winner"]
        leaning = f"; the judge favoured the {bias} position" if same_slot and bias else ""
        details["position_bias"] = bias if same_slot else None
        explanation = (
            f"position inconsistency: {_RESULT[first]} with the answer shown first, "
            f"{_RESULT[second]} with it shown second{leaning}; score {score:g} is the average"
        )
    return Verdict(score, explanation=explanation, details=details)


def register(registry: EvaluatorRegistry) -> None:
    """Register this module's evaluator types."""
    registry.register("llm_rubric", threshold=0.5)(build_rubric)
    registry.register("g_eval", threshold=0.5)(build_g_eval)
    registry.register("pairwise", threshold=0.5)(build_pairwise)
