"""Levenshtein, ROUGE-L and BLEU scores, checked against rouge-score and sacrebleu."""

from __future__ import annotations

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from keel.evals.text_metrics import (
    bleu_tokens,
    levenshtein_similarity,
    rouge_l,
    rouge_tokens,
    sentence_bleu,
)

# (candidate, reference): paraphrases, reorderings, repeats, numbers and punctuation the
# 13a tokenizer treats specially, HTML entities, newlines, empty and one-word texts.
PAIRS = [
    ("The cat sat on the mat.", "The cat is on the mat."),
    ("Paris is the capital of France", "The capital of France is Paris"),
    ("", "something"),
    ("identical words here", "identical words here"),
    ("It costs $3.50 - or 3,000 yen!", "It costs 3.50 dollars, or 3,000 yen."),
    ("Hello world", "Goodbye moon"),
    ("the the the the", "the cat"),
    ("A quick brown fox jumps over the lazy dog", "The quick brown dog jumps on the log"),
    ("x", "x y z w v"),
    ("e-mail me at foo@bar.com &amp; ok", "email me at foo@bar.com & ok"),
    ("line one\nline two", "line one line two"),
    ("1-2 3.4 a.b (see [ref]) {x}", "1 - 2 3.4 a . b see ref x"),
    ("Returns: HTTP 429 Too Many Requests; retry after 2s.", "HTTP 429 means retry later"),
    ("The model answered: 'No, I don't know.'", "I don't know"),
]

ROUGE = rouge_scorer.RougeScorer(["rougeL"])


@pytest.mark.parametrize(("candidate", "reference"), PAIRS)
def test_rouge_l_matches_rouge_score(candidate: str, reference: str) -> None:
    want = ROUGE.score(reference, candidate)["rougeL"]
    got = rouge_l(candidate, reference)
    assert got.fmeasure == pytest.approx(want.fmeasure, abs=1e-9)
    assert got.precision == pytest.approx(want.precision, abs=1e-9)
    assert got.recall == pytest.approx(want.recall, abs=1e-9)


@pytest.mark.parametrize(("candidate", "reference"), PAIRS)
def test_sentence_bleu_matches_sacrebleu(candidate: str, reference: str) -> None:
    want = sacrebleu.sentence_bleu(candidate, [reference]).score / 100
    assert sentence_bleu(candidate, [reference]) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize(("candidate", "reference"), PAIRS)
def test_bleu_tokens_match_sacrebleus_13a_tokenizer(candidate: str, reference: str) -> None:
    tokenize = sacrebleu.BLEU(tokenize="13a").tokenizer
    assert bleu_tokens(candidate) == tokenize(candidate.rstrip()).split()


def test_sentence_bleu_with_several_references_matches_sacrebleu() -> None:
    hypothesis = "The cat is sitting on the mat"
    references = ["A cat sat on the mat", "The cat is on the mat", "There is a cat on a mat"]
    want = sacrebleu.sentence_bleu(hypothesis, references).score / 100
    assert sentence_bleu(hypothesis, references) == pytest.approx(want, abs=1e-9)
    assert sentence_bleu(hypothesis, references) > sentence_bleu(hypothesis, references[:1])


def test_sentence_bleu_ignoring_case_matches_sacrebleus_lowercase() -> None:
    want = sacrebleu.sentence_bleu("THE CAT sat", ["the cat sat down"], lowercase=True).score
    got = sentence_bleu("THE CAT sat", ["the cat sat down"], lowercase=True)
    assert got == pytest.approx(want / 100, abs=1e-9)
    assert sentence_bleu("THE CAT sat", ["the cat sat down"]) < got


def test_sentence_bleu_needs_a_reference() -> None:
    with pytest.raises(ValueError, match="at least one reference"):
        sentence_bleu("text", [])


def test_rouge_keeps_non_ascii_letters_where_rouge_score_drops_them() -> None:
    # The one documented difference: rouge-score keeps [a-z0-9] only ("café" -> "caf").
    assert rouge_tokens("Café crème, s'il vous plaît") == [
        "café",
        "crème",
        "s",
        "il",
        "vous",
        "plaît",
    ]
    assert rouge_l("Grüße aus München", "Grüße aus Berlin").fmeasure == pytest.approx(2 / 3)


def test_levenshtein_similarity_is_one_minus_edits_over_the_longer_length() -> None:
    assert levenshtein_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert levenshtein_similarity("abcde", "abcdx") == pytest.approx(0.8)
    assert levenshtein_similarity("same", "same") == 1.0
    assert levenshtein_similarity("", "") == 1.0
    assert levenshtein_similarity("", "abc") == 0.0
