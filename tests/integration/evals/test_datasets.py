"""Datasets on SQLite and PostgreSQL: versions, nothing-new pushes, stable ids, from traces."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from keel.core.datasets import DatasetItem, derived_item_id, items_hash
from keel.core.evaluation import Document
from keel.core.scores import Score
from keel.core.spans import Span
from keel.evals.datasets import DatasetError, DatasetNotFound, DatasetService, parse_items
from keel.store.datasets import DatasetStore
from keel.store.queries import ScoreFilter, TraceFilter, TraceQueries
from keel.store.scores import ScoreRepository
from keel.store.trace_selection import TraceSelector
from keel.store.writer import SpanWriter


def items(*docs: dict[str, Any]) -> list[DatasetItem]:
    return parse_items((f"items[{i}]", doc) for i, doc in enumerate(docs))


@pytest.fixture
def service(engine: Engine) -> DatasetService:
    clock = iter(float(t) for t in range(1_000, 1_000_000))
    return DatasetService(DatasetStore(engine), clock=lambda: next(clock))


def push(service: DatasetService, name: str, found: list[DatasetItem], **extra: Any) -> Any:
    return service.push(name, found, author="dana", message=extra.pop("message", None),
                        source="golden.jsonl", **extra)  # fmt: skip


def test_pushes_make_immutable_versions_and_identical_content_makes_none(
    service: DatasetService,
) -> None:
    first = items(
        {"id": "a", "input": {"q": "one"}, "expected": "1", "context": ["doc"]},
        {"input": "two", "metadata": {"k": "v"}},
    )
    created = push(service, "golden", first, message="first cut")
    assert (created.status, created.version, created.previous) == ("created", 1, None)
    assert (created.item_count, created.added, created.content_hash) == (2, 2, items_hash(first))

    again = push(service, "golden", items(*[
        {"id": "a", "input": {"q": "one"}, "expected": "1", "context": ["doc"]},
        {"input": "two", "metadata": {"k": "v"}},
    ]))  # fmt: skip
    assert (again.status, again.version) == ("unchanged", 1)

    edited = items(
        {"id": "a", "input": {"q": "one"}, "expected": "uno", "context": ["doc"]},
        {"input": "three"},
    )
    second = push(service, "golden", edited, message="fix a, replace two")
    assert (second.status, second.version, second.previous) == ("created", 2, 1)
    assert (second.added, second.removed, second.changed) == (1, 1, 1)

    v1 = service.load("golden", 1)
    assert v1.items == tuple(first)  # the old version reads as it was
    assert v1.items[0].context == (Document("1", "doc"),)
    assert v1.items[1].id == derived_item_id("two")
    assert (v1.author, v1.message, v1.source, v1.created_at) == (
        "dana", "first cut", "golden.jsonl", 1000.0,
    )  # fmt: skip
    latest = service.load("golden")
    assert latest.version == 2 and latest.items == tuple(edited)
    assert [v.version for v in service.versions("golden")] == [1, 2]
    assert [(s.name, s.version, s.item_count) for s in service.summaries()] == [("golden", 2, 2)]


def test_a_dry_run_says_what_would_change_and_writes_nothing(service: DatasetService) -> None:
    push(service, "d", items({"input": "a"}))
    planned = push(service, "d", items({"input": "a"}, {"input": "b"}), dry_run=True)
    assert (planned.status, planned.version, planned.added) == ("created", 2, 1)
    assert [v.version for v in service.versions("d")] == [1]


def test_items_page_in_order_and_by_id(engine: Engine, service: DatasetService) -> None:
    push(service, "big", items(*({"id": f"i{n:03}", "input": str(n)} for n in range(250))))
    store = DatasetStore(engine)
    first = store.items("big", 1, limit=100)
    rest = store.items("big", 1, after=first[-1][0])
    assert [p for p, _ in first + rest] == list(range(250))
    assert [item.id for _, item in first[:2]] == ["i000", "i001"]
    found = store.items_by_id("big", 1, ["i007", "i249", "nope"])
    assert sorted(found) == ["i007", "i249"] and found["i007"].input == "7"


def test_refusals_name_what_is_wrong(service: DatasetService) -> None:
    with pytest.raises(DatasetNotFound, match="no dataset named 'nope'"):
        service.info("nope")
    push(service, "d", items({"input": "a"}))
    with pytest.raises(DatasetNotFound, match="dataset 'd' has no version 9"):
        service.info("d", 9)
    with pytest.raises(DatasetError, match="is not a dataset name"):
        push(service, "bad name!", items({"input": "a"}))
    with pytest.raises(DatasetError, match="at least one item"):
        push(service, "d", [])


def test_concurrent_identical_pushes_make_one_version(engine: Engine) -> None:
    service = DatasetService(DatasetStore(engine))
    content = items(*({"input": f"q{n}"} for n in range(50)))
    outcomes: list[Any] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        outcomes.append(push(service, "race", content))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [v.version for v in service.versions("race")] == [1]
    assert {o.version for o in outcomes} == {1}
    assert sorted(o.status for o in outcomes).count("created") == 1


# --- from traces -------------------------------------------------------------------------


@pytest.fixture
def writer(engine: Engine) -> Iterator[SpanWriter]:
    writer = SpanWriter(engine, flush_interval_s=0.01)
    writer.start()
    yield writer
    writer.close()


@pytest.fixture
def recorded(engine: Engine, writer: SpanWriter, make_span: Callable[..., Span]) -> dict[str, Span]:
    """Four traces: two of prompt rag_qa (one thumbed down), another prompt, an SDK trace."""
    roots = {
        "down": make_span(
            name="chat fast",
            input=[{"role": "user", "content": "What is the warranty?"}],
            output={"choices": [{"message": {"role": "assistant", "content": "Two years."}}]},
            attributes={"keel.prompt.name": "rag_qa", "keel.prompt.version": 3},
        ),
        "up": make_span(
            input=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            attributes={"keel.prompt.name": "rag_qa", "keel.prompt.version": 2},
        ),
        "other": make_span(input="other prompt", attributes={"keel.prompt.name": "summarise"}),
        "sdk": make_span(
            name="answer",
            kind="span",
            input={"question": "How long?"},
            output="Two years.",
            attributes={"keel.prompt.variables": {"query": "How long?", "context": "..."}},
        ),
    }
    # The SDK trace used rag_qa in a child span, not on its root.
    child = make_span(
        trace_id=roots["sdk"].trace_id,
        parent_span_id=roots["sdk"].span_id,
        attributes={"keel.prompt.name": "rag_qa", "keel.prompt.version": 3},
    )
    for span in [*roots.values(), child]:
        writer.emit(span)
    assert writer.flush()
    scores = ScoreRepository(engine)
    for key, value in (("down", 0.0), ("up", 1.0), ("sdk", 0.0)):
        scores.add(
            Score(f"s-{key}", "thumbs", "boolean", value, None, roots[key].trace_id, None, None,
                  "human", None, None, 1.0)
        )  # fmt: skip
    return roots


WINDOW = (1_600_000_000.0, 1_800_000_000.0)


def selector(engine: Engine) -> TraceSelector:
    return TraceSelector(engine, TraceQueries(engine))


def test_selection_by_prompt_and_score(engine: Engine, recorded: dict[str, Span]) -> None:
    pick = selector(engine)
    ids = {span.trace_id: key for key, span in recorded.items()}

    def keys(**kwargs: Any) -> list[str]:
        where = kwargs.pop("where", TraceFilter())
        return [ids[r.trace_id] for r in pick.roots(WINDOW, where, kwargs.pop("limit", 10),
                                                      **kwargs)]  # fmt: skip

    assert keys(prompt="rag_qa") == ["sdk", "up", "down"]  # newest first, any span of the trace
    assert keys(prompt="rag_qa", prompt_version=3) == ["sdk", "down"]
    thumbs_down = TraceFilter(scores=(ScoreFilter("thumbs", "eq", 0.0),))
    assert keys(prompt="rag_qa", where=thumbs_down) == ["sdk", "down"]
    assert keys(prompt="rag_qa", where=thumbs_down, limit=1) == ["sdk"]
    assert keys(where=TraceFilter(name="chat fast")) == ["other", "up", "down"]
    assert keys(prompt="nope") == []


def test_a_dataset_from_traces(
    engine: Engine, service: DatasetService, recorded: dict[str, Span]
) -> None:
    roots = selector(engine).roots(WINDOW, TraceFilter(), 10, prompt="rag_qa")
    selection = {"prompt": "rag_qa", "from": WINDOW[0], "to": WINDOW[1]}
    outcome = service.push_traces(
        "regressions", roots, selection=selection, expected_from_output=True, append=False,
        author="dana", message="thumbs down",
    )  # fmt: skip
    assert (outcome.push.status, outcome.push.version, outcome.traces) == ("created", 1, 3)
    version = service.load("regressions")
    assert version.source is not None and version.source.startswith('traces {"from":')
    sdk, up, down = version.items
    # Prompt variables on the span win; else one user message is its text; else messages.
    assert sdk.input == {"query": "How long?", "context": "..."}
    assert sdk.expected == "Two years."
    assert sdk.metadata == {"trace_id": recorded["sdk"].trace_id, "filter": selection}
    assert up.input == {"messages": recorded["up"].input} and up.expected is None
    assert down.input == "What is the warranty?" and down.expected == "Two years."
    assert down.id == derived_item_id("What is the warranty?")

    # The same traces again: nothing new. Appending keeps the items and adds the new ones.
    again = service.push_traces(
        "regressions", roots, selection=selection, expected_from_output=True, append=True,
        author=None, message=None,
    )  # fmt: skip
    assert (again.push.status, again.duplicates, again.kept) == ("unchanged", 3, 3)
    other = selector(engine).roots(WINDOW, TraceFilter(), 10, prompt="summarise")
    grown = service.push_traces(
        "regressions", other, selection={"prompt": "summarise"}, expected_from_output=False,
        append=True, author=None, message=None,
    )  # fmt: skip
    assert (grown.push.version, grown.push.item_count, grown.push.added) == (2, 4, 1)
    assert service.load("regressions").items[:3] == version.items


def test_traces_without_input_make_no_item(
    service: DatasetService, make_span: Callable[..., Span]
) -> None:
    with pytest.raises(DatasetError, match="1 without a recorded input"):
        service.push_traces(
            "empty", [make_span()], selection={}, expected_from_output=False, append=False,
            author=None, message=None,
        )  # fmt: skip
