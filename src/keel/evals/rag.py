"""RAG evaluators: is the answer grounded in what was retrieved, and was the right thing retrieved.

The case's `context` holds the retrieved documents, in rank order, with the ids citations use.

- `faithfulness`: the judge splits the answer into factual claims and checks each against
  the context in one answer; score = supported claims / all claims. An answer making no
  claim ("I don't know") has nothing unfaithful in it: score 1 by default (`no_claims`).
- `answer_relevancy`: does the answer address the question (not: is it right)? `method:
  judge` (default) grades it 1–5. `method: questions` is RAGAS's: the judge writes
  `questions` questions the answer would answer and says whether it is noncommittal; the
  score is their mean cosine similarity to the real question under the run's sentence
  embedder (0 for a noncommittal answer). It needs an embedder and is refused without one.
- `context_precision`: are the relevant documents ranked first? Average precision over the
  top `k`: the mean of precision@i at each rank i holding a relevant document.
- `context_recall`: was everything needed retrieved? The share of the relevant ids found in
  the top `k`; without ids, the judge splits the expected answer into statements and
  attributes each to a document or to none (score = attributed / statements).
- `citation_accuracy`: every `[Source: X]` in the answer must name a retrieved document
  (checked without a judge), and with `check_support` (default) the judge confirms the
  cited document supports the sentence citing it; score = correct citations / citations.

Relevance for precision and recall comes from `metadata.relevant_ids` when the item has
ground truth (deterministic, no judge call), else from the judge (precision: one concurrent
call per document, against the question and the expected answer). `mode: ground_truth`
never calls a judge (and needs none configured); `mode: judge` ignores the ids.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from keel.core.evaluation import Case, Document, Verdict
from keel.evals.judge_call import (
    AnswerSchema,
    Judge,
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
from keel.evals.judges import GRADE, normalise
from keel.evals.registry import Check, EvaluatorRegistry, Params, Services
from keel.ports import Embedder

_STRING = {"type": "string"}
_BOOLEAN = {"type": "boolean"}
_REASON = {"type": "string", "description": "A short justification, written first."}
RELEVANCE = AnswerSchema("relevance", strict_object(reason=_REASON, relevant=_BOOLEAN))
SUPPORT = AnswerSchema("support", strict_object(reason=_REASON, supported=_BOOLEAN))


def _source_id(documents: Sequence[Document]) -> dict[str, Any]:
    ids = sorted({d.id for d in documents})
    return {"type": "string", "enum": [*ids, ""], "description": 'a document id, or ""'}


def _list_of(name: str, item: dict[str, Any]) -> dict[str, Any]:
    return strict_object(**{name: {"type": "array", "items": item}})


def _positive_int(params: Params, key: str) -> int | None:
    value = params.optional_number(key)
    if value is not None and (not value.is_integer() or value < 1):
        raise params.error(key, "must be a whole number of at least 1")
    return None if value is None else int(value)


MODES = ("auto", "ground_truth", "judge")


def _judge_unless_ground_truth(params: Params, services: Services, mode: str) -> Judge | None:
    """The judge, unless `mode: ground_truth` says relevance comes only from the item."""
    if mode != "ground_truth":
        return judge_from(params, services)
    for key in ("model", "retries"):
        if params.has(key):
            raise params.error(key, "is not used with mode: ground_truth (no judge is called)")
    return None


def _ground_truth(case: Case, mode: str) -> set[str] | str | None:
    """`metadata.relevant_ids` as a set when this mode uses it; None when the judge decides;
    an error text when the ids are needed and missing or malformed."""
    raw = case.metadata.get("relevant_ids")
    if mode == "judge" or (raw is None and mode == "auto"):
        return None
    if raw is None:
        return "mode ground_truth needs metadata.relevant_ids on every item; this one has none"
    if isinstance(raw, list | tuple) and all(isinstance(i, str) for i in raw):
        return set(raw) if raw else "metadata.relevant_ids is empty: list the relevant ids"
    return "metadata.relevant_ids must be a list of document ids (strings)"


def _no_context(evaluator: str) -> Verdict:
    return Verdict.failed(
        f"{evaluator} needs the retrieved documents, and the case has no context documents: "
        "give the item `context` or let the task return what it retrieved"
    )


def _quote(items: Sequence[str], limit: int = 3) -> str:
    shown = "; ".join(f"{t!r}" for t in items[:limit])
    more = len(items) - limit
    return shown + (f" and {more} more" if more > 0 else "")


# -- faithfulness ----------------------------------------------------------------------------

_FAITHFULNESS = """
Check whether the answer is faithful to the context documents.
1. Split the answer into its factual claims: short, self-contained statements of one fact
   each, with pronouns resolved. Leave out questions, opinions, greetings and remarks about
   the answer itself ("I am not sure").
2. Judge each claim against the context documents alone, not your own knowledge:
   "supported" if a document states it or it follows directly from what they state;
   "contradicted" if a document states otherwise; "unsupported" if they say neither, even
   when the claim is true.
3. For each claim give the id of the document that supports or contradicts it, or "".
Return an empty list when the answer makes no factual claim.
"""


def build_faithfulness(params: Params, services: Services) -> Check:
    """The share of the answer's claims that the context documents support."""
    no_claims = params.choice("no_claims", ("pass", "fail"), "pass")
    judge = judge_from(params, services)

    async def check(case: Case) -> Verdict:
        if not case.context:
            return _no_context("faithfulness")
        claim = strict_object(
            claim=_STRING,
            verdict={"type": "string", "enum": ["supported", "unsupported", "contradicted"]},
            source_id=_source_id(case.context),
        )
        schema = AnswerSchema("claims", _list_of("claims", claim))
        task = (
            Prompt()
            .add(_FAITHFULNESS)
            .data("question", case.input_text)
            .data("context", documents_text(case.context))
            .data("answer", case.output)
        )
        got = await judge.ask(task.text(), schema, link=trace_link(case))
        claims: list[dict[str, Any]] = got.data["claims"]
        details = judge_details(judge.model_name, [got]) | {"claims": claims}
        if not claims:
            score = 1.0 if no_claims == "pass" else 0.0
            why = "the answer makes no factual claim, so none is unsupported"
            return Verdict(score, explanation=f"{why} (no_claims: {no_claims})", details=details)
        bad = [c["claim"] for c in claims if c["verdict"] != "supported"]
        contradicted = sum(c["verdict"] == "contradicted" for c in claims)
        supported = len(claims) - len(bad)
        explanation = f"{supported} of {len(claims)} claims are supported by the context"
        if bad:
            explanation += f"; not supported: {_quote(bad)}"
        details |= {"supported": supported, "contradicted": contradicted, "total": len(claims)}
        return Verdict(supported / len(claims), explanation=explanation, details=details)

    return judged(check)


# -- answer_relevancy ------------------------------------------------------------------------

_RELEVANCY = """
Grade how well the answer addresses the question: relevance only, not whether it is correct.
5 = answers exactly what was asked, directly and completely; 4 = answers it, with a small gap
or some material that was not asked for; 3 = answers part of it; 2 = mostly beside the point,
or vague and evasive; 1 = does not address it, or declines to answer. First write a short
reason, then the score.
"""

_QUESTIONS = """
Write {n} different questions that the answer below answers, each as a user would ask it,
using only what the answer says. Then say whether the answer is noncommittal: evasive, vague
or declining to answer ("I don't know", "it depends").
"""


def build_answer_relevancy(params: Params, services: Services) -> Check:
    """Whether the answer addresses the question: graded by the judge, or RAGAS-style."""
    method = params.choice("method", ("judge", "questions"), "judge")
    count = _positive_int(params, "questions") or 3
    judge = judge_from(params, services)
    if method == "judge":
        return judged(_graded_relevancy(judge))
    if services.embedder is None:
        raise params.error(
            "method",
            "questions needs the sentence embedder (install keel[embeddings]), and the run "
            "has none; use method: judge",
        )
    return judged(_questions_relevancy(judge, services.embedder, count))


def _graded_relevancy(judge: Judge) -> Check:
    async def check(case: Case) -> Verdict:
        task = (
            Prompt().add(_RELEVANCY).data("question", case.input_text).data("answer", case.output)
        )
        got = await judge.ask(task.text(), GRADE, link=trace_link(case))
        grade = int(got.data["score"])
        details = judge_details(judge.model_name, [got]) | {"method": "judge", "grade": grade}
        return Verdict(normalise(grade), explanation=str(got.data["reason"]), details=details)

    return check


def _questions_relevancy(judge: Judge, load: Callable[[], Embedder], count: int) -> Check:
    questions = {"type": "array", "items": _STRING}
    schema = AnswerSchema(
        "questions",
        strict_object(questions=questions, noncommittal=_BOOLEAN),
        check=lambda d: None if d["questions"] else "questions is empty: write at least one",
    )
    embedder: list[Embedder] = []  # loaded on first use: loading a model takes seconds

    async def check(case: Case) -> Verdict:
        task = Prompt().add(_QUESTIONS.format(n=count)).data("answer", case.output)
        got = await judge.ask(task.text(), schema, link=trace_link(case))
        written: list[str] = got.data["questions"]
        if not embedder:
            embedder.append(await asyncio.to_thread(load))
        vectors = await asyncio.to_thread(embedder[0].embed, [case.input_text, *written])
        similarities = [max(0.0, _cosine(vectors[0], v)) for v in vectors[1:]]
        mean = sum(similarities) / len(similarities)
        details = judge_details(judge.model_name, [got]) | {
            "method": "questions",
            "questions": written,
            "similarities": similarities,
            "noncommittal": got.data["noncommittal"],
            "embedder": embedder[0].model_name,
        }
        if got.data["noncommittal"]:
            return Verdict(0.0, explanation="the answer is noncommittal", details=details)
        explanation = f"questions the answer answers are {mean:.2f} similar to the question"
        return Verdict(mean, explanation=explanation, details=details)

    return check


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norm if norm else 0.0


# -- context_precision -----------------------------------------------------------------------

_DOCUMENT_RELEVANCE = """
Decide whether the document below is relevant to the question: whether it contains
information that helps to answer it (the reference answer, when given, shows what the answer
needs). A document on the topic that does not help to answer is not relevant. First write a
short reason, then the decision.
"""


def average_precision(relevant: Sequence[bool]) -> float:
    """Mean of precision@i over the ranks i holding a relevant document (0 when none)."""
    hits, total = 0, 0.0
    for rank, is_relevant in enumerate(relevant, 1):
        if is_relevant:
            hits += 1
            total += hits / rank
    return total / hits if hits else 0.0


def build_context_precision(params: Params, services: Services) -> Check:
    """Average precision@k of the retrieved documents: relevant ones ranked first."""
    k = _positive_int(params, "k")
    mode = params.choice("mode", MODES, "auto")
    judge = _judge_unless_ground_truth(params, services, mode)

    async def check(case: Case) -> Verdict:
        documents = case.context[:k]
        if not documents:
            return _no_context("context_precision")
        truth = _ground_truth(case, mode)
        if isinstance(truth, str):
            return Verdict.failed(truth)
        details: dict[str, Any] = {"k": len(documents)}
        if truth is not None or judge is None:
            relevant = [d.id in (truth or ()) for d in documents]
            details["mode"] = "ground_truth"
        else:
            answers = await asyncio.gather(*(_relevance(judge, case, d) for d in documents))
            relevant = [bool(a.data["relevant"]) for a in answers]
            details |= judge_details(judge.model_name, answers) | {"mode": "judge"}
            reasons = zip(documents, answers, strict=True)
            details["reasons"] = {d.id: a.data["reason"] for d, a in reasons}
        score = average_precision(relevant)
        details["relevant"] = {d.id: r for d, r in zip(documents, relevant, strict=True)}
        ranks = [str(i) for i, r in enumerate(relevant, 1) if r]
        explanation = (
            f"relevant at rank {', '.join(ranks)} of {len(documents)}; "
            f"average precision {score:.2f}"
            if ranks
            else f"none of the top {len(documents)} documents is relevant"
        )
        return Verdict(score, explanation=explanation, details=details)

    return judged(check)


async def _relevance(judge: Judge, case: Case, document: Document) -> JudgeAnswer:
    task = (
        Prompt()
        .add(_DOCUMENT_RELEVANCE)
        .data("question", case.input_text)
        .data("reference_answer", expected_text(case.expected))
        .data("document", document.text, id=document.id)
    )
    return await judge.ask(
        task.text(), RELEVANCE, link=trace_link(case), about=f"document {document.id!r}"
    )


# -- context_recall --------------------------------------------------------------------------

_RECALL = """
Check whether the context documents hold what the reference answer says. Split the reference
answer into its statements (one fact each) and, for each, decide whether it can be
attributed to the context documents: stated there, or following directly from them. Give
the id of the document it comes from, or "" when it cannot be attributed.
"""


def build_context_recall(params: Params, services: Services) -> Check:
    """The share of what the expected answer needs that retrieval found."""
    k = _positive_int(params, "k")
    mode = params.choice("mode", MODES, "auto")
    judge = _judge_unless_ground_truth(params, services, mode)

    async def check(case: Case) -> Verdict:
        documents = case.context[:k]
        truth = _ground_truth(case, mode)
        if isinstance(truth, str):
            return Verdict.failed(truth)
        if truth is not None or judge is None:
            relevant = truth or set()
            found = sorted(relevant & {d.id for d in documents})
            missing = sorted(relevant - set(found))
            explanation = f"{len(found)} of {len(relevant)} relevant documents retrieved"
            if missing:
                explanation += f"; missing: {', '.join(missing)}"
            details = {"mode": "ground_truth", "k": len(documents), "found": found}
            details["missing"] = missing
            return Verdict(len(found) / len(relevant), explanation=explanation, details=details)
        expected = expected_text(case.expected)
        if expected is None or not expected.strip():
            return Verdict.failed(
                "context_recall needs the item's expected answer (or metadata.relevant_ids) "
                "to know what should have been retrieved"
            )
        if not documents:
            return Verdict(0.0, explanation="no documents were retrieved", details={"k": 0})
        return await _judged_recall(judge, case, documents, expected)

    return judged(check)


async def _judged_recall(
    judge: Judge, case: Case, documents: Sequence[Document], expected: str
) -> Verdict:
    item = strict_object(statement=_STRING, attributed=_BOOLEAN, source_id=_source_id(documents))
    schema = AnswerSchema(
        "statements",
        _list_of("statements", item),
        check=lambda d: None if d["statements"] else "statements is empty: list at least one",
    )
    task = (
        Prompt()
        .add(_RECALL)
        .data("question", case.input_text)
        .data("context", documents_text(documents))
        .data("reference_answer", expected)
    )
    got = await judge.ask(task.text(), schema, link=trace_link(case))
    statements: list[dict[str, Any]] = got.data["statements"]
    missing = [s["statement"] for s in statements if not s["attributed"]]
    attributed = len(statements) - len(missing)
    explanation = f"{attributed} of {len(statements)} expected statements are in the context"
    if missing:
        explanation += f"; missing: {_quote(missing)}"
    details = judge_details(judge.model_name, [got]) | {
        "mode": "judge",
        "k": len(documents),
        "statements": statements,
    }
    return Verdict(attributed / len(statements), explanation=explanation, details=details)


# -- citation_accuracy -----------------------------------------------------------------------

DEFAULT_CITATION = r"\[Source:\s*([^\]]+)\]"
_PUNCTUATION_SPACE = re.compile(r"\s+([.,;:!?])")

_SUPPORT = """
The sentence below cites the document below as its source. Decide whether the document
supports what the sentence states (when the sentence cites several sources, the part this
one would be cited for): it states it, or it follows directly from it. First write a short
reason, then the decision.
"""


@dataclass(frozen=True, slots=True)
class Citation:
    """One cited id with the sentence that cites it (citation markers removed)."""

    source_id: str
    sentence: str


@functools.lru_cache(maxsize=16)
def _sentence_end(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """A sentence's end: a full stop (and the citation markers right after it), or a line end."""
    return re.compile(rf"[.!?](?:\s*(?:{pattern.pattern}))*(?=\s|$)|\n+", pattern.flags)


def find_citations(text: str, pattern: re.Pattern[str]) -> list[Citation]:
    """Each citation in `text`, with its sentence: the text up to the sentence's end, where
    markers right after the full stop still belong to it ("It is 4. [Source: a]")."""
    citations: list[Citation] = []
    start = 0
    ends = [m.end() for m in _sentence_end(pattern).finditer(text)]
    for end in [*ends, len(text)]:
        chunk = text[start:end]
        start = end
        sentence = _PUNCTUATION_SPACE.sub(r"\1", " ".join(pattern.sub("", chunk).split()))
        for match in pattern.finditer(chunk):
            for source in re.split(r"[,;]", match.group(1)):
                if source.strip():
                    citations.append(Citation(source.strip(), sentence))
    return citations


def build_citation_accuracy(params: Params, services: Services) -> Check:
    """Citations name retrieved documents and (with check_support) are supported by them."""
    check_support = params.flag("check_support", True)
    no_citations = params.choice("no_citations", ("fail", "pass"), "fail")
    source = params.text("pattern", DEFAULT_CITATION)
    try:
        pattern = re.compile(source)
    except re.error as exc:
        raise params.error("pattern", f"is not a valid regular expression: {exc}") from exc
    if pattern.groups < 1:
        raise params.error("pattern", "needs a group capturing the cited id, like [Source: (…)]")
    judge = judge_from(params, services) if check_support else None
    for key in ("model", "retries"):
        if not check_support and params.has(key):
            raise params.error(key, "is not used with check_support: false (no judge is called)")

    async def check(case: Case) -> Verdict:
        citations = find_citations(case.output, pattern)
        if not citations:
            score = 1.0 if no_citations == "pass" else 0.0
            why = f"the answer cites no source (no_citations: {no_citations})"
            return Verdict(score, explanation=why, details={"citations": 0})
        documents = {d.id: d for d in case.context}
        known = list(dict.fromkeys(c for c in citations if c.source_id in documents))
        answers = await asyncio.gather(
            *(_support(judge, case, c, documents[c.source_id]) for c in known if judge)
        )
        judged_support = dict(zip(known, answers, strict=False))
        unknown = sorted({c.source_id for c in citations if c.source_id not in documents})
        unsupported = [c for c, a in judged_support.items() if not a.data["supported"]]
        wrong = [c for c in citations if c.source_id in unknown or c in unsupported]
        parts = [f"{len(citations) - len(wrong)} of {len(citations)} citations are correct"]
        if unknown:
            parts.append(f"not among the retrieved documents: {', '.join(unknown)}")
        if unsupported:
            cited = "; ".join(f"{c.source_id} for {c.sentence!r}" for c in unsupported[:3])
            parts.append(f"the cited document does not support the sentence: {cited}")
        details: dict[str, Any] = {
            "citations": len(citations),
            "unknown_ids": unknown,
            "support_checked": judge is not None,
            "unsupported": [
                {"source_id": c.source_id, "sentence": c.sentence, "reason": a.data["reason"]}
                for c, a in judged_support.items()
                if not a.data["supported"]
            ],
        }
        if judge is not None:
            details |= judge_details(judge.model_name, answers)
        score = 1.0 - len(wrong) / len(citations)
        return Verdict(score, explanation="; ".join(parts), details=details)

    return judged(check)


async def _support(judge: Judge, case: Case, citation: Citation, document: Document) -> JudgeAnswer:
    task = (
        Prompt()
        .add(_SUPPORT)
        .data("sentence", citation.sentence)
        .data("document", document.text, id=document.id)
    )
    return await judge.ask(
        task.text(), SUPPORT, link=trace_link(case), about=f"citation of {citation.source_id!r}"
    )


def register(registry: EvaluatorRegistry) -> None:
    """Register this module's evaluator types."""
    registry.register("faithfulness", threshold=0.8)(build_faithfulness)
    registry.register("answer_relevancy", threshold=0.5)(build_answer_relevancy)
    registry.register("context_precision", threshold=0.5)(build_context_precision)
    registry.register("context_recall", threshold=0.5)(build_context_recall)
    registry.register("citation_accuracy", threshold=1.0)(build_citation_accuracy)
