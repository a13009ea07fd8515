"""The semantic-similarity evaluator: how close the output's meaning is to a reference's.

`semantic_similarity` embeds the task's output and its reference (the `value` parameter,
one text or a list, else the item's expected output) with a local sentence-embedding model
(`keel.evals.embeddings`, all-MiniLM-L6-v2 by default; `Services.embedder` replaces it) and
scores the cosine similarity of the two vectors, clamped at zero: score = max(0, cosine).
The clamp keeps the number sentence-transformers users know; a negative cosine is as
"unrelated" as zero. With several references the closest one counts. The model reads the
first 256 word pieces of a text (about 190 English words); the rest does not count.

The default threshold, 0.7, comes from measuring all-MiniLM-L6-v2: paraphrases of support
answers scored 0.64-0.97 (median 0.78), unrelated sentences -0.05-0.18. Embeddings see
topic and wording, not facts: "lasts two years" and "lasts three years" score 0.90, so
similarity says an answer is on the subject, and equality or a judge says it is right.

Embedding is blocking and CPU-bound, so it runs in a worker thread, and the model is loaded
there on first use. Cases evaluated concurrently share that thread: texts that arrive while
a batch is being embedded go into the next batch, one forward pass for many cases. Vectors
of texts seen recently (a `value` reference, repeated outputs) are kept and not recomputed.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Sequence

from keel.core.evaluation import Case, Verdict
from keel.evals.embeddings import cosine, default_embedder, model_directory
from keel.evals.registry import Check, EvaluatorRegistry, Params, Services
from keel.ports import Embedder

DEFAULT_THRESHOLD = 0.7
CACHED_VECTORS = 1024  # about 12 MB of vectors as Python floats

Vector = list[float]


class EmbeddingBatcher:
    """Embeds the texts of concurrent cases together, in a worker thread."""

    def __init__(self, factory: Callable[[], Embedder]) -> None:
        self._factory = factory
        self._embedder: Embedder | None = None
        self._cache: OrderedDict[str, Vector] = OrderedDict()
        self._pending: list[tuple[list[str], asyncio.Future[dict[str, Vector]]]] = []
        self._drain: asyncio.Task[None] | None = None

    @property
    def model_name(self) -> str | None:
        """The model's name once it is loaded."""
        return None if self._embedder is None else self._embedder.model_name

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One vector per text, in order."""
        found = {t: self._cache[t] for t in texts if t in self._cache}
        for text in found:
            self._cache.move_to_end(text)
        wanted = [t for t in dict.fromkeys(texts) if t not in found]
        if wanted:
            loop = asyncio.get_running_loop()
            if self._drain is not None and self._drain.get_loop() is not loop:
                self._pending, self._drain = [], None  # an earlier event loop's leftovers
            future: asyncio.Future[dict[str, Vector]] = loop.create_future()
            self._pending.append((wanted, future))
            if self._drain is None or self._drain.done():
                self._drain = loop.create_task(self._embed_pending())
            found.update(await future)
        return [found[t] for t in texts]

    async def _embed_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            texts = list(dict.fromkeys(t for wanted, _ in batch for t in wanted))
            try:
                vectors = dict(zip(texts, await asyncio.to_thread(self._embed, texts), strict=True))
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for wanted, future in batch:
                if not future.done():
                    future.set_result({t: vectors[t] for t in wanted})
            self._cache.update(vectors)
            while len(self._cache) > CACHED_VECTORS:
                self._cache.popitem(last=False)

    def _embed(self, texts: list[str]) -> list[Vector]:
        """In the worker thread: load the model on first use, then embed."""
        if self._embedder is None:
            self._embedder = self._factory()
        return self._embedder.embed(texts)


def _quote(text: str, limit: int = 60) -> str:
    """A text for an explanation: quoted, and cut in the middle when long."""
    if len(text) > limit:
        text = f"{text[: limit // 2]}…{text[-limit // 2 :]}"
    return repr(text)


def _references(given: list[str] | None, case: Case) -> list[str] | None:
    """The texts to compare to: the `value` parameter, else the item's expected output."""
    if given is not None:
        return given
    expected = case.expected
    if isinstance(expected, str):
        return [expected]
    if isinstance(expected, list) and expected and all(isinstance(e, str) for e in expected):
        return list(expected)
    return None


def semantic_similarity(params: Params, services: Services) -> Check:
    """Cosine similarity of sentence embeddings of the output and the reference, clamped at 0."""
    given = params.texts("value") if params.has("value") else None
    factory = services.embedder
    if factory is None:
        model_directory()  # a missing install is a configuration error, before any case runs
        factory = default_embedder
    batcher = EmbeddingBatcher(factory)

    async def check(case: Case) -> Verdict:
        references = _references(given, case)
        if references is None:
            got = "no expected output" if case.expected is None else "a non-text expected output"
            return Verdict.failed(
                f"nothing to compare to: no `value` parameter and the item has {got}"
            )
        output, *others = await batcher.embed([case.output, *references])
        similarities = [cosine(output, other) for other in others]
        best = max(range(len(similarities)), key=similarities.__getitem__)
        similarity = similarities[best]
        closest = "" if len(references) == 1 else f" (closest of {len(references)} references)"
        reference = _quote(references[best])
        return Verdict(
            score=min(1.0, max(0.0, similarity)),
            explanation=f"cosine similarity {similarity:.3f} to {reference}{closest}",
            details={
                "cosine": similarity,
                "reference": references[best],
                "model": batcher.model_name,
            },
        )

    return check


def register(registry: EvaluatorRegistry) -> None:
    """Register this module's evaluator types."""
    registry.register(
        "semantic_similarity",
        threshold=DEFAULT_THRESHOLD,
        summary="meaning close to the reference: cosine of local sentence embeddings, >= 0",
    )(semantic_similarity)
