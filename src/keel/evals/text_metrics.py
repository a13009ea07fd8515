"""Text similarity scores in [0, 1]: Levenshtein similarity, ROUGE-L and sentence BLEU.

ROUGE-L and BLEU are written here rather than imported: the reference libraries
(rouge-score, sacrebleu) pull in nltk, absl, lxml and regex, and rouge-score's LCS is a
pure-Python table that is quadratic in the answer's length. Both libraries are the test
oracle (tests/unit/evals/test_text_metrics.py), and the numbers match them:

- `rouge_l` is rouge-score's `rougeL` F-measure (no stemming): lowercase, split on
  everything that is not a letter or digit. One documented difference: rouge-score keeps
  only ASCII letters and digits (it reads "café" as "caf"); Keel keeps every letter.
- `sentence_bleu` is sacrebleu's `sentence_bleu` divided by 100: the 13a tokenizer,
  n-grams up to 4, "exp" smoothing, effective order, the closest reference length.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz.distance import LCSseq, Levenshtein

_BLEU_MAX_ORDER = 4


def levenshtein_similarity(a: str, b: str) -> float:
    """1 - edit distance / length of the longer text (1.0 for two empty texts)."""
    return float(Levenshtein.normalized_similarity(a, b))


@dataclass(frozen=True, slots=True)
class Overlap:
    """Precision (of the candidate), recall (of the reference) and their F-measure."""

    precision: float
    recall: float
    fmeasure: float


_WORD = re.compile(r"[^\W_]+")


def rouge_tokens(text: str) -> list[str]:
    """ROUGE's tokens: the text lowercased, split into runs of letters and digits."""
    return _WORD.findall(text.lower())


def rouge_l(candidate: str, reference: str) -> Overlap:
    """ROUGE-L: the longest common subsequence of tokens, as precision, recall and F1."""
    cand, ref = rouge_tokens(candidate), rouge_tokens(reference)
    if not cand or not ref:
        return Overlap(0.0, 0.0, 0.0)
    lcs = LCSseq.similarity(cand, ref)
    precision, recall = lcs / len(cand), lcs / len(ref)
    if precision + recall == 0:
        return Overlap(precision, recall, 0.0)
    return Overlap(precision, recall, 2 * precision * recall / (precision + recall))


# mteval-v13a's tokenizer as sacrebleu writes it: punctuation and symbols become tokens,
# except periods and commas inside numbers and dashes after digits.
_BLEU_RULES = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
)
_ENTITIES = (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"))


def bleu_tokens(text: str) -> list[str]:
    """BLEU's tokens (the 13a tokenizer, as WMT and sacrebleu use it)."""
    line = text.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        for entity, char in _ENTITIES:
            line = line.replace(entity, char)
    line = f" {line} "
    for pattern, replacement in _BLEU_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


def _ngrams(tokens: Sequence[str]) -> Counter[tuple[str, ...]]:
    return Counter(
        tuple(tokens[i : i + n])
        for n in range(1, _BLEU_MAX_ORDER + 1)
        for i in range(len(tokens) - n + 1)
    )


def _closest_length(length: int, candidates: Sequence[int]) -> int:
    """The reference length closest to `length` (the shorter one on a tie)."""
    return min(candidates, key=lambda c: (abs(c - length), c))


def sentence_bleu(hypothesis: str, references: Sequence[str], *, lowercase: bool = False) -> float:
    """Sentence BLEU in [0, 1] against one or more references (smoothed, effective order)."""
    if not references:
        raise ValueError("sentence_bleu needs at least one reference")
    prepare = str.lower if lowercase else str
    hyp = bleu_tokens(prepare(hypothesis))
    ref_tokens = [bleu_tokens(prepare(r)) for r in references]
    ref_counts = _ngrams(ref_tokens[0])
    for tokens in ref_tokens[1:]:
        ref_counts |= _ngrams(tokens)  # an n-gram matches as often as its most generous ref
    correct = [0] * _BLEU_MAX_ORDER
    total = [0] * _BLEU_MAX_ORDER
    for ngram, count in _ngrams(hyp).items():
        total[len(ngram) - 1] += count
        correct[len(ngram) - 1] += min(count, ref_counts.get(ngram, 0))
    if not any(correct):
        return 0.0
    ref_len = _closest_length(len(hyp), [len(t) for t in ref_tokens])
    brevity = 1.0 if len(hyp) >= ref_len else math.exp(1 - ref_len / len(hyp))
    # "exp" smoothing (NIST): the k-th order without a match counts as 1 / (2^k * total).
    log_precisions: list[float] = []
    smoothing = 1.0
    for matched, seen in zip(correct, total, strict=True):
        if seen == 0:
            break  # effective order: orders longer than the hypothesis do not count
        if matched == 0:
            smoothing *= 2
            log_precisions.append(math.log(100.0 / (smoothing * seen)))
        else:
            log_precisions.append(math.log(100.0 * matched / seen))
    return brevity * math.exp(sum(log_precisions) / len(log_precisions)) / 100.0
