"""RAG evaluators against the fake upstream: faithfulness, answer relevancy, context
precision and recall (judged and from ground-truth ids), citation accuracy."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from keel.core.evaluation import Case, Document
from keel.evals import rag
from keel.evals.gateway_client import GatewayChatModel
from keel.evals.rag import DEFAULT_CITATION, Citation, average_precision, find_citations
from keel.evals.registry import (
    Evaluator,
    EvaluatorConfigError,
    EvaluatorRegistry,
    EvaluatorSpec,
    Services,
)
from keel.ports import Embedder
from keel.testing import Behavior, FakeUpstream, RecordedRequest

DOCS = (
    Document("d1", "Paris is the capital of France."),
    Document("d2", "The Eiffel Tower was completed in 1889."),
    Document("d3", "Lyon is known for its cuisine."),
)
CASE = Case(
    input="What is the capital of France, and when was the Eiffel Tower built?",
    output="Paris is the capital of France. The Eiffel Tower was built in 1889 by aliens.",
    expected="Paris is the capital. The Eiffel Tower was completed in 1889.",
    context=DOCS,
)


class WordEmbedder:
    """A small deterministic embedder: word counts over a fixed vocabulary."""

    model_name = "test-words"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vocabulary = sorted({w for t in texts for w in re.findall(r"\w+", t.lower())})
        vectors = []
        for text in texts:
            words = re.findall(r"\w+", text.lower())
            vector = [float(words.count(v)) for v in vocabulary]
            norm = math.sqrt(sum(x * x for x in vector)) or 1.0
            vectors.append([x / norm for x in vector])
        return vectors


def word_embedder() -> Embedder:
    return WordEmbedder()


@dataclass
class Judging:
    fake: FakeUpstream
    services: Services

    def build(self, type: str, services: Services | None = None, **params: Any) -> Evaluator:
        registry = EvaluatorRegistry()
        rag.register(registry)
        return registry.build(EvaluatorSpec(type, params=params), services or self.services)


@pytest.fixture
async def judging() -> AsyncIterator[Judging]:
    async with FakeUpstream() as fake:
        model = GatewayChatModel(fake.url + "/v1")
        try:
            services = Services(judge=model, judge_model="judge-model", embedder=word_embedder)
            yield Judging(fake, services)
        finally:
            model.close()


def reply(**fields: Any) -> Behavior:
    return Behavior(reply=orjson.dumps(fields).decode())


def task_text(request: RecordedRequest) -> str:
    return str(request.json["messages"][1]["content"])


def schema(request: RecordedRequest) -> dict[str, Any]:
    return dict(request.json["response_format"]["json_schema"]["schema"])


def shown_document(request: RecordedRequest) -> str:
    found = re.search(r'<document id="([^"]+)">', task_text(request))
    assert found is not None
    return found.group(1)


# -- faithfulness ----------------------------------------------------------------------------


def claim(text: str, verdict: str, source_id: str = "") -> dict[str, str]:
    return {"claim": text, "verdict": verdict, "source_id": source_id}


async def test_faithfulness_is_the_share_of_supported_claims(judging: Judging) -> None:
    claims = [
        claim("Paris is the capital of France.", "supported", "d1"),
        claim("The Eiffel Tower was built in 1889.", "supported", "d2"),
        claim("The Eiffel Tower was built by aliens.", "unsupported"),
        claim("Lyon is the capital.", "contradicted", "d1"),
    ]
    judging.fake.enqueue(reply(claims=claims))

    verdict = await judging.build("faithfulness").evaluate(CASE)

    assert verdict.score == 0.5 and verdict.passed is False  # default threshold 0.8
    assert verdict.details["supported"] == 2 and verdict.details["contradicted"] == 1
    assert "2 of 4 claims are supported" in verdict.explanation
    assert "built by aliens" in verdict.explanation
    request = judging.fake.last_request
    item = schema(request)["properties"]["claims"]["items"]
    assert item["properties"]["source_id"]["enum"] == ["d1", "d2", "d3", ""]
    assert request.json["response_format"]["json_schema"]["strict"] is True
    assert all(f'<document id="{d.id}">\n{d.text}\n</document>' in task_text(request) for d in DOCS)


async def test_faithfulness_retries_when_the_judge_cites_a_document_it_was_not_shown(
    judging: Judging,
) -> None:
    judging.fake.enqueue(
        reply(claims=[claim("Paris is the capital.", "supported", "d7")]),
        reply(claims=[claim("Paris is the capital.", "supported", "d1")]),
    )

    verdict = await judging.build("faithfulness").evaluate(CASE)

    assert verdict.score == 1.0 and verdict.details["judge_calls"] == 2
    retry = judging.fake.last_request.json["messages"][-1]["content"]
    assert "'d7' is not one of" in retry


async def test_an_answer_without_claims_is_faithful_unless_configured_otherwise(
    judging: Judging,
) -> None:
    case = Case(input="q", output="I don't know.", context=DOCS)
    judging.fake.enqueue(reply(claims=[]), reply(claims=[]))

    lenient = await judging.build("faithfulness").evaluate(case)
    strict = await judging.build("faithfulness", no_claims="fail").evaluate(case)

    assert (lenient.score, lenient.passed) == (1.0, True)
    assert "makes no factual claim" in lenient.explanation
    assert (strict.score, strict.passed, strict.error) == (0.0, False, None)


async def test_faithfulness_without_context_fails_without_a_judge_call(judging: Judging) -> None:
    verdict = await judging.build("faithfulness").evaluate(Case(input="q", output="a"))

    assert verdict.error is not None and "no context documents" in verdict.error
    assert judging.fake.requests == []


async def test_faithfulness_answers_that_never_parse_are_a_failed_evaluation(
    judging: Judging,
) -> None:
    judging.fake.enqueue(*(Behavior(reply='{"claims": [{"claim": "x"') for _ in range(3)))

    verdict = await judging.build("faithfulness").evaluate(CASE)

    assert verdict.score is None and verdict.raw == '{"claims": [{"claim": "x"'
    assert verdict.error is not None and "did not parse after 3 attempts" in verdict.error


# -- answer_relevancy ------------------------------------------------------------------------


async def test_answer_relevancy_graded_by_the_judge(judging: Judging) -> None:
    judging.fake.enqueue(reply(reason="Answers both parts.", score=5))

    verdict = await judging.build("answer_relevancy").evaluate(CASE)

    assert verdict.score == 1.0 and verdict.details["method"] == "judge"
    assert "relevance only, not whether it is correct" in task_text(judging.fake.last_request)


async def test_answer_relevancy_from_generated_questions_and_embeddings(
    judging: Judging,
) -> None:
    case = Case(input="capital of france", output="Paris.")
    questions = ["capital of france", "france capital city"]
    judging.fake.enqueue(reply(questions=questions, noncommittal=False))

    verdict = await judging.build("answer_relevancy", method="questions", questions=2).evaluate(
        case
    )

    similarities = verdict.details["similarities"]
    assert similarities[0] == pytest.approx(1.0)
    assert similarities[1] == pytest.approx(2 / 3)  # 2 shared words of 3 each
    assert verdict.score == pytest.approx(sum(similarities) / 2)
    assert verdict.details["embedder"] == "test-words"
    assert "Write 2 different questions" in task_text(judging.fake.last_request)


async def test_a_noncommittal_answer_is_not_relevant(judging: Judging) -> None:
    judging.fake.enqueue(reply(questions=["What is unknown?"], noncommittal=True))

    verdict = await judging.build("answer_relevancy", method="questions").evaluate(CASE)

    assert verdict.score == 0.0 and verdict.explanation == "the answer is noncommittal"


def test_question_based_relevancy_needs_an_embedder() -> None:
    registry = EvaluatorRegistry()
    rag.register(registry)
    services = Services(judge=GatewayChatModel("http://127.0.0.1:9/v1"), judge_model="m")
    spec = EvaluatorSpec("answer_relevancy", params={"method": "questions"})

    with pytest.raises(EvaluatorConfigError, match=r"'answer_relevancy': method: .*embedder"):
        registry.build(spec, services)


# -- context_precision -----------------------------------------------------------------------


def test_average_precision_counts_precision_at_each_relevant_rank() -> None:
    assert average_precision([True, False, True]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([False, True, True]) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert average_precision([False, False]) == 0.0


async def test_context_precision_from_ground_truth_ids_calls_no_judge(judging: Judging) -> None:
    case = Case(input="q", output="a", context=DOCS, metadata={"relevant_ids": ["d2", "d3"]})

    verdict = await judging.build("context_precision").evaluate(case)
    top_one = await judging.build("context_precision", k=1).evaluate(case)

    assert verdict.score == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert verdict.details["mode"] == "ground_truth"
    assert verdict.details["relevant"] == {"d1": False, "d2": True, "d3": True}
    assert (top_one.score, top_one.passed) == (0.0, False)
    assert "none of the top 1 documents is relevant" in top_one.explanation
    assert judging.fake.requests == []


async def test_context_precision_judges_each_document_concurrently(judging: Judging) -> None:
    scripted = [True, False, True]
    judging.fake.enqueue(*(reply(reason="-", relevant=r) for r in scripted))

    verdict = await judging.build("context_precision").evaluate(CASE)

    # The fake answers in arrival order: pair each scripted answer with its document.
    judged = dict(zip(map(shown_document, judging.fake.requests), scripted, strict=True))
    assert sorted(judged) == ["d1", "d2", "d3"]
    relevant = [judged[d.id] for d in DOCS]
    assert verdict.details["relevant"] == judged and verdict.details["judge_calls"] == 3
    assert verdict.score == pytest.approx(average_precision(relevant))
    request = judging.fake.last_request
    assert "<reference_answer>" in task_text(request) and "<question>" in task_text(request)


async def test_context_precision_ground_truth_mode_needs_no_judge_but_needs_ids() -> None:
    registry = EvaluatorRegistry()
    rag.register(registry)
    evaluator = registry.build(
        EvaluatorSpec("context_precision", params={"mode": "ground_truth"}), Services()
    )

    verdict = await evaluator.evaluate(Case(input="q", output="a", context=DOCS))

    assert verdict.error is not None and "needs metadata.relevant_ids" in verdict.error
    with pytest.raises(EvaluatorConfigError, match=r"'context_precision': model: .*judge"):
        registry.build(EvaluatorSpec("context_precision"), Services())


# -- context_recall --------------------------------------------------------------------------


async def test_context_recall_from_ground_truth_ids(judging: Judging) -> None:
    case = Case(input="q", output="a", context=DOCS, metadata={"relevant_ids": ["d1", "d4"]})

    verdict = await judging.build("context_recall").evaluate(case)

    assert verdict.score == 0.5 and verdict.details["missing"] == ["d4"]
    assert verdict.explanation == "1 of 2 relevant documents retrieved; missing: d4"
    assert judging.fake.requests == []


async def test_context_recall_judged_from_the_expected_answers_statements(
    judging: Judging,
) -> None:
    statements = [
        {"statement": "Paris is the capital.", "attributed": True, "source_id": "d1"},
        {"statement": "The tower was completed in 1889.", "attributed": True, "source_id": "d2"},
        {"statement": "It is 330 m tall.", "attributed": False, "source_id": ""},
    ]
    judging.fake.enqueue(reply(statements=statements))

    verdict = await judging.build("context_recall", k=2).evaluate(CASE)

    assert verdict.score == pytest.approx(2 / 3) and verdict.details["k"] == 2
    assert "'It is 330 m tall.'" in verdict.explanation
    task = task_text(judging.fake.last_request)
    assert '<document id="d2">' in task and '<document id="d3">' not in task  # top 2 only


async def test_context_recall_needs_an_expected_answer(judging: Judging) -> None:
    verdict = await judging.build("context_recall").evaluate(
        Case(input="q", output="a", context=DOCS)
    )

    assert verdict.error is not None and "expected answer" in verdict.error


# -- citation_accuracy -----------------------------------------------------------------------

CITED = Case(
    input="Tell me about Paris.",
    output=(
        "Paris is the capital of France [Source: d1]. It has 40 million residents. "
        "[Source: d9] The Eiffel Tower was completed in 1889 [Source: d2, d1]."
    ),
    context=DOCS,
)


def test_each_citation_is_paired_with_the_sentence_that_makes_it() -> None:
    found = find_citations(CITED.output, re.compile(DEFAULT_CITATION))

    assert found == [
        Citation("d1", "Paris is the capital of France."),
        Citation("d9", "It has 40 million residents."),
        Citation("d2", "The Eiffel Tower was completed in 1889."),
        Citation("d1", "The Eiffel Tower was completed in 1889."),
    ]


async def test_citations_must_name_retrieved_documents(judging: Judging) -> None:
    verdict = await judging.build("citation_accuracy", check_support=False).evaluate(CITED)

    assert verdict.score == 0.75 and verdict.passed is False  # default threshold 1.0
    assert verdict.details["unknown_ids"] == ["d9"]
    assert "not among the retrieved documents: d9" in verdict.explanation
    assert judging.fake.requests == []


async def test_cited_documents_must_support_their_sentences(judging: Judging) -> None:
    scripted = [True, True, False]  # three known (sentence, document) pairs
    judging.fake.enqueue(*(reply(reason="-", supported=s) for s in scripted))

    verdict = await judging.build("citation_accuracy").evaluate(CITED)

    assert verdict.score == 0.5  # d9 is unknown and one citation is unsupported
    assert len(judging.fake.requests) == 3 and verdict.details["judge_calls"] == 3
    (unsupported,) = verdict.details["unsupported"]
    request = judging.fake.requests[scripted.index(False)]
    assert unsupported["source_id"] == shown_document(request)
    assert f"<sentence>\n{unsupported['sentence']}\n</sentence>" in task_text(request)
    assert "the cited document does not support the sentence" in verdict.explanation


async def test_an_answer_without_citations_scores_zero_unless_allowed(judging: Judging) -> None:
    case = Case(input="q", output="Paris.", context=DOCS)

    strict = await judging.build("citation_accuracy").evaluate(case)
    lenient = await judging.build("citation_accuracy", no_citations="pass").evaluate(case)

    assert (strict.score, strict.passed) == (0.0, False)
    assert "cites no source" in strict.explanation
    assert (lenient.score, lenient.passed) == (1.0, True)


async def test_a_custom_citation_pattern(judging: Judging) -> None:
    case = Case(input="q", output="Paris is the capital [d1]. Lyon too [d7].", context=DOCS)

    verdict = await judging.build(
        "citation_accuracy", pattern=r"\[(d\d+)\]", check_support=False
    ).evaluate(case)

    assert verdict.score == 0.5 and verdict.details["unknown_ids"] == ["d7"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"pattern": "[Source"}, "pattern: is not a valid regular expression"),
        ({"pattern": r"\[Source: \w+\]"}, "pattern: needs a group"),
        ({"check_support": False, "model": "m"}, "model: is not used with check_support"),
        ({"no_citations": "maybe"}, "no_citations: must be one of fail, pass"),
    ],
)
def test_citation_accuracy_refuses_bad_configuration(params: dict[str, Any], message: str) -> None:
    registry = EvaluatorRegistry()
    rag.register(registry)
    services = Services(judge=GatewayChatModel("http://127.0.0.1:9/v1"), judge_model="m")

    with pytest.raises(EvaluatorConfigError, match=re.escape(message)):
        registry.build(EvaluatorSpec("citation_accuracy", params=params), services)


def test_rag_evaluators_are_registered_with_their_thresholds() -> None:
    registry = EvaluatorRegistry()
    rag.register(registry)

    thresholds = {t.name: t.threshold for t in registry.types()}

    assert thresholds == {
        "answer_relevancy": 0.5,
        "citation_accuracy": 1.0,
        "context_precision": 0.5,
        "context_recall": 0.5,
        "faithfulness": 0.8,
    }
