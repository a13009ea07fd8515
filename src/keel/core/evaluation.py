"""What an evaluator looks at (`Case`) and what it says (`Verdict`), and how a threshold and
a negation turn a score into pass or fail.

An evaluator reads one task output beside the dataset item it answered: the item's input,
expected output and context documents, and the call's latency and cost. It returns a score
in [0, 1] (1 is best), a pass/fail and an explanation. An evaluation that could not be done
(a judge whose answer never parsed, a model that failed) is a `Verdict` with `error` set and
`score` None: it is counted as a failure, never as NaN and never as a silent 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Document:
    """A context document of a RAG item: what retrieval returned, with the id citations use."""

    id: str
    text: str


@dataclass(frozen=True, slots=True)
class Case:
    """One task output to evaluate, beside the dataset item it answered.

    `input` is the item's input as the dataset holds it (a mapping of prompt variables, or a
    text); `output` is the task's answer as text. `latency_ms` and `cost_usd` are None when
    the task did not report them (a cost of None is "unknown", not $0).
    """

    input: Any
    output: str
    expected: Any = None
    context: tuple[Document, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    latency_ms: float | None = None
    cost_usd: float | None = None

    @property
    def input_text(self) -> str:
        """The input as one text: the text itself, a `query`/`question`/`input` variable,
        else every variable as `name: value` lines."""
        if isinstance(self.input, str):
            return self.input
        if isinstance(self.input, Mapping):
            for key in ("query", "question", "input"):
                value = self.input.get(key)
                if isinstance(value, str):
                    return value
            return "\n".join(f"{k}: {v}" for k, v in self.input.items())
        return "" if self.input is None else str(self.input)


@dataclass(frozen=True, slots=True)
class Verdict:
    """An evaluator's answer for one case.

    `score` is in [0, 1] for the built-in evaluators (None when the evaluation failed);
    `passed` is None until a threshold has been applied (`judge`); `error` says why an
    evaluation failed, and `raw` keeps the judge's unparsed answer for the reader.
    `details` holds evaluator-specific evidence (the claims a faithfulness judge found,
    the per-order verdicts of a pairwise judge, ...).
    """

    score: float | None
    passed: bool | None = None
    explanation: str = ""
    error: str | None = None
    raw: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def failed(cls, error: str, raw: str | None = None) -> Verdict:
        """An evaluation that could not be done: no score, counted as a failure."""
        return cls(score=None, passed=False, explanation=error, error=error, raw=raw)

    @property
    def ok(self) -> bool:
        """True when the evaluation was done (whatever it concluded)."""
        return self.error is None


def judge(verdict: Verdict, threshold: float, negate: bool = False) -> Verdict:
    """Apply a threshold (pass when score >= threshold) and an optional negation.

    Negating turns the score into 1 - score and flips pass/fail, so "not contains X" passes
    exactly when "contains X" fails. A failed evaluation stays failed under negation.
    """
    if verdict.error is not None or verdict.score is None:
        if verdict.passed is False:
            return verdict
        return replace(verdict, passed=False)
    score = verdict.score
    passed = verdict.passed if verdict.passed is not None else score >= threshold
    if negate:
        explanation = f"negated: {verdict.explanation}" if verdict.explanation else "negated"
        return Verdict(
            1.0 - score, not passed, explanation, verdict.error, verdict.raw, verdict.details
        )
    if verdict.passed is passed:
        return verdict
    # Built directly: `dataclasses.replace` costs more than the check on a cached re-run.
    return Verdict(score, passed, verdict.explanation, verdict.error, verdict.raw, verdict.details)
