"""The API's read queries on both dialects: trace lists, filters, pages, trees, sessions, users."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import pytest
from sqlalchemy import Engine

from keel.core.ids import new_span_id, new_trace_id
from keel.core.scores import Score
from keel.core.spans import Span
from keel.core.usage import Usage
from keel.store import queries as queries_module
from keel.store.queries import (
    Key,
    ScoreFilter,
    SpanNotInTrace,
    TraceFilter,
    TraceQueries,
    TraceSummary,
)
from keel.store.scores import ScoreRepository
from keel.store.writer import SpanWriter

MakeSpan = Callable[..., Span]
T0 = 1_700_000_000.0
EVERYTHING = (0.0, 4_000_000_000.0)


def store(engine: Engine, spans: Iterable[Span]) -> None:
    with SpanWriter(engine, flush_interval_s=0.02) as writer:
        for span in spans:
            writer.emit(span)
    assert writer.stats().rejected == writer.stats().dropped == 0


def score(engine: Engine, name: str, value: float | str, **target: str) -> None:
    numeric = not isinstance(value, str)
    ScoreRepository(engine).add(
        Score(
            score_id=new_trace_id(),
            name=name,
            data_type="numeric" if numeric else "categorical",
            value=float(value) if numeric else None,
            string_value=None if numeric else str(value),
            trace_id=target.get("trace_id"),
            span_id=None,
            session_id=target.get("session_id"),
            source="api",
            comment=None,
            author=None,
            created_at=time.time(),
        )
    )


def app_trace(make_span: MakeSpan, start: float, name: str, **root_fields: object) -> list[Span]:
    """An application trace: a root span (trace attributes on it) and one generation below."""
    generation = dict(root_fields.pop("generation", {}))  # type: ignore[call-overload]
    latency_s = float(root_fields.pop("latency_s", 1.0))  # type: ignore[arg-type]
    root = make_span(name=name, kind="span", start_time=start, end_time=start + latency_s)
    for key, value in root_fields.items():
        setattr(root, key, value)
    child = make_span(
        trace_id=root.trace_id,
        parent_span_id=root.span_id,
        start_time=start + 0.1,
        end_time=start + 0.2,
        **generation,
    )
    return [root, child]


def names(summaries: list[TraceSummary]) -> list[str]:
    return [summary.root.name for summary in summaries]


@pytest.fixture
def corpus(engine: Engine, make_span: MakeSpan) -> dict[str, str]:
    """Three traces: A and B (root + generation), C (one generation); their trace ids."""
    a = app_trace(
        make_span,
        T0 + 30,
        "A",
        user_id="alice",
        session_id="s1",
        tags=["beta", "web"],
        latency_s=2.0,
        output="Paris, of course.",
        generation={
            "alias": "fast",
            "model": "gpt-4o-mini",
            "cost_usd": 0.002,
            "usage": Usage(100, 20),
            "input": [{"role": "user", "content": "What is the Capital of France?"}],
        },
    )
    b = app_trace(
        make_span,
        T0 + 20,
        "B",
        user_id="bob",
        session_id="s2",
        tags=["beta"],
        latency_s=0.5,
        output="I am 100% sure",
        generation={
            "alias": "smart",
            "model": "claude-sonnet-4-5",
            "cost_usd": 0.01,
            "status": "error",
            "error": "HTTP 500",
        },
    )
    c = make_span(
        name="C",
        start_time=T0 + 10,
        end_time=T0 + 10.1,
        user_id="alice",
        tags=["web"],
        alias="fast",
        model="gpt-4o-mini",
        cost_usd=0.0001,
        usage=Usage(5, 1),
        input=[{"role": "user", "content": 'say "hi"\nplease'}],
    )
    store(engine, [*a, *b, c])
    ids = {"A": a[0].trace_id, "B": b[0].trace_id, "C": c.trace_id}
    score(engine, "thumbs", 1.0, trace_id=ids["A"])
    score(engine, "accuracy", 0.9, trace_id=ids["A"])
    score(engine, "thumbs", 0.0, trace_id=ids["B"])
    score(engine, "accuracy", 0.5, trace_id=ids["B"])
    score(engine, "tone", "friendly", trace_id=ids["C"])
    return ids


def test_each_trace_is_one_row_headed_by_its_root_with_totals_and_scores(
    engine: Engine, corpus: dict[str, str]
) -> None:
    page = TraceQueries(engine).list_traces(EVERYTHING, TraceFilter(), limit=50)
    assert names(page.items) == ["A", "B", "C"] and page.next_key is None
    a, b, c = page.items
    assert a.root.kind == "span" and a.root.parent_span_id is None
    assert a.root.output == "Paris, of course."  # the root's own payload, complete
    assert (a.totals.spans, a.totals.input_tokens, a.totals.output_tokens) == (2, 100, 20)
    assert a.totals.cost_usd == pytest.approx(0.002) and a.totals.errors == 0
    assert a.totals.latency_ms == pytest.approx(2000.0)
    assert {(s.name, s.value) for s in a.scores} == {("thumbs", 1.0), ("accuracy", 0.9)}
    assert b.totals.errors == 1 and c.totals.spans == 1
    assert [s.string_value for s in c.scores] == ["friendly"]


def test_a_trace_without_its_root_yet_is_headed_by_its_earliest_span(
    engine: Engine, make_span: MakeSpan
) -> None:
    trace_id, missing_root = new_trace_id(), new_span_id()
    late = make_span(
        trace_id=trace_id, parent_span_id=missing_root, name="second", start_time=T0 + 5
    )
    early = make_span(
        trace_id=trace_id, parent_span_id=missing_root, name="first", start_time=T0 + 1
    )
    store(engine, [late, early])
    queries = TraceQueries(engine)
    (only,) = queries.list_traces(EVERYTHING, TraceFilter(), limit=10).items
    assert only.root.name == "first" and only.totals.spans == 2

    root = make_span(trace_id=trace_id, span_id=missing_root, name="root", start_time=T0 + 2)
    store(engine, [root])  # the root arrives after its children: it heads the trace now
    (only,) = queries.list_traces(EVERYTHING, TraceFilter(), limit=10).items
    assert only.root.name == "root" and only.totals.spans == 3


def test_the_window_is_from_inclusive_to_exclusive_on_the_head(
    engine: Engine, corpus: dict[str, str]
) -> None:
    queries = TraceQueries(engine)
    assert names(queries.list_traces((T0 + 20, T0 + 30), TraceFilter(), 50).items) == ["B"]
    # A's generation started inside (T0+30.1) but A's head did not: A is not listed.
    assert names(queries.list_traces((T0 + 30.05, T0 + 40), TraceFilter(), 50).items) == []


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (TraceFilter(name="A"), ["A"]),
        (TraceFilter(user="alice"), ["A", "C"]),
        (TraceFilter(session="s2"), ["B"]),
        (TraceFilter(tags=("beta",)), ["A", "B"]),
        (TraceFilter(tags=("beta", "web")), ["A"]),
        (TraceFilter(tags=("web",)), ["A", "C"]),
        (TraceFilter(tags=("nope",)), []),
        (TraceFilter(model="fast"), ["A", "C"]),  # alias, used by a child span of A
        (TraceFilter(model="claude-sonnet-4-5"), ["B"]),  # upstream model
        (TraceFilter(status="error"), ["B"]),
        (TraceFilter(status="ok"), ["A", "C"]),
        (TraceFilter(min_latency_ms=1000), ["A"]),
        (TraceFilter(min_latency_ms=400), ["A", "B"]),
        (TraceFilter(min_cost=0.005), ["B"]),
        (TraceFilter(min_cost=0.001), ["A", "B"]),
        (TraceFilter(scores=(ScoreFilter("thumbs", "eq", 1.0),)), ["A"]),
        (TraceFilter(scores=(ScoreFilter("thumbs", "ne", 1.0),)), ["B"]),
        (TraceFilter(scores=(ScoreFilter("accuracy", "gte", 0.9),)), ["A"]),
        (TraceFilter(scores=(ScoreFilter("accuracy", "gt", 0.9),)), []),
        (TraceFilter(scores=(ScoreFilter("accuracy", "lt", 0.9),)), ["B"]),
        (TraceFilter(scores=(ScoreFilter("accuracy", "lte", 0.9),)), ["A", "B"]),
        (TraceFilter(scores=(ScoreFilter("tone", "eq", "friendly"),)), ["C"]),
        (TraceFilter(scores=(ScoreFilter("tone", "ne", "friendly"),)), []),
        (
            TraceFilter(
                scores=(ScoreFilter("thumbs", "eq", 0.0), ScoreFilter("accuracy", "gt", 0.8))
            ),
            [],
        ),
        (TraceFilter(text="capital OF france"), ["A"]),  # a child span's input, any case
        (TraceFilter(text="paris"), ["A"]),  # the root's output
        (TraceFilter(text='say "hi"\nplease'), ["C"]),  # quotes and newlines as typed
        (TraceFilter(text="100%"), ["B"]),
        (TraceFilter(text="0%s"), []),  # % is a character here, not a wildcard
        (TraceFilter(user="alice", model="fast", status="ok", tags=("web",)), ["A", "C"]),
    ],
    ids=repr,
)
def test_each_filter_narrows_the_list(
    engine: Engine, corpus: dict[str, str], where: TraceFilter, expected: list[str]
) -> None:
    page = TraceQueries(engine).list_traces(EVERYTHING, where, limit=50)
    assert names(page.items) == expected


@pytest.mark.parametrize("limit", [1, 3])
def test_text_search_in_slices_finds_the_newest_matches_in_order_across_pages(
    engine: Engine, make_span: MakeSpan, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    # Slices of 4 spans: the search needs several. The two "old" traces have their heads
    # at the start and their matches in the newest slice; the heads of the t traces are
    # newer than theirs, but their matches lie in older slices.
    monkeypatch.setattr(queries_module, "_SEARCH_SLICE_SPANS", 4)
    spans: list[Span] = []
    for i in range(30):
        trace = app_trace(make_span, T0 + i * 10, f"t{i}")
        if i % 3 == 0:
            trace[1].input = f"needle {i}"
        spans += trace
    for head, match in ((1.0, 295.0), (2.0, 294.0)):
        late = app_trace(make_span, T0 + head, f"old {head:.0f}", latency_s=400.0)
        late[1].start_time, late[1].end_time = T0 + match, T0 + match + 1
        late[1].output = "the NEEDLE, late"
        spans += late
    store(engine, spans)
    queries = TraceQueries(engine)
    expected = [f"t{i}" for i in range(27, 0, -3)] + ["old 2", "old 1", "t0"]
    seen: list[str] = []
    after = None
    while True:
        page = queries.list_traces(EVERYTHING, TraceFilter(text="needle"), limit, after=after)
        seen += names(page.items)
        if page.next_key is None:
            break
        after = page.next_key
    assert seen == expected
    only_old = queries.list_traces(EVERYTHING, TraceFilter(text="late"), limit=3)
    assert names(only_old.items) == ["old 2", "old 1"]
    combined = TraceFilter(text="needle", name="t9")
    assert names(queries.list_traces(EVERYTHING, combined, limit=3).items) == ["t9"]


def test_pages_return_every_trace_once_newest_first_even_while_traces_arrive(
    engine: Engine, make_span: MakeSpan
) -> None:
    # 23 traces, several starting at the same instant: the span id breaks the tie.
    spans = [make_span(name=f"t{i}", start_time=T0 + i // 3) for i in range(23)]
    store(engine, spans)
    expected = sorted(spans, key=lambda s: (s.start_time, s.span_id), reverse=True)
    queries = TraceQueries(engine)
    window = (T0, T0 + 100)
    seen: list[str] = []
    after: Key | None = None
    for page_number in range(10):
        page = queries.list_traces(window, TraceFilter(), limit=5, after=after)
        seen.extend(summary.root.span_id for summary in page.items)
        if page_number == 0:  # newer traces arrive while the client pages
            store(engine, [make_span(name="new", start_time=T0 + 50 + i) for i in range(3)])
        after = page.next_key
        if after is None:
            break
    assert seen == [span.span_id for span in expected]
    assert len(queries.list_traces(window, TraceFilter(), limit=500).items) == 26


def test_a_large_trace_loads_top_down_and_the_rest_lazily(
    engine: Engine, make_span: MakeSpan
) -> None:
    trace_id = new_trace_id()
    root = make_span(trace_id=trace_id, name="agent", kind="span", start_time=T0, end_time=T0 + 60)
    spans = [root]
    steps = []
    for i in range(30):
        step = make_span(
            trace_id=trace_id,
            parent_span_id=root.span_id,
            name=f"step {i}",
            kind="span",
            start_time=T0 + 1 + i,
            end_time=T0 + 1.5 + i,
        )
        steps.append(step)
        spans.append(step)
        for j in range(99):
            spans.append(
                make_span(
                    trace_id=trace_id,
                    parent_span_id=step.span_id,
                    name=f"llm {i}.{j}",
                    start_time=step.start_time + j / 1000,
                    end_time=T0 + 61 + i,
                    usage=Usage(10, 1),
                    cost_usd=0.001,
                    status="error" if j == 0 else "ok",
                )
            )
    store(engine, spans)
    queries = TraceQueries(engine)

    tree = queries.trace_tree(trace_id, limit=100)
    assert tree is not None and tree.root.span_id == root.span_id
    assert tree.totals.spans == 3001 and tree.totals.input_tokens == 29_700
    assert tree.totals.errors == 30 and tree.totals.cost_usd == pytest.approx(2.97)
    assert len(tree.spans) == 100
    first, *rest = tree.spans
    assert (first.span.span_id, first.depth, first.child_count) == (root.span_id, 0, 30)
    assert first.subtree.spans == 3001
    assert first.subtree.latency_ms == pytest.approx((61 + 29) * 1000)  # the last child's end
    assert [n.span.name for n in rest[:30]] == [f"step {i}" for i in range(30)]  # breadth-first
    assert all(n.depth == 1 and n.child_count == 99 for n in rest[:30])
    step0 = rest[0]
    assert (step0.subtree.spans, step0.subtree.input_tokens, step0.subtree.errors) == (100, 990, 1)
    assert [n.span.name for n in rest[30:]] == [f"llm 0.{j}" for j in range(69)]
    assert rest[30].depth == 2 and rest[30].span.usage == Usage(10, 1)

    loaded: list[str] = []
    after: Key | None = None
    while True:
        page = queries.children(trace_id, steps[5].span_id, limit=40, after=after)
        assert page is not None and len(page.items) <= 40
        loaded.extend(node.span.name for node in page.items)
        assert all(node.depth == 2 and node.child_count == 0 for node in page.items)
        if page.next_key is None:
            break
        after = page.next_key
    assert loaded == [f"llm 5.{j}" for j in range(99)]

    roots = queries.children(trace_id, None, limit=10)
    assert roots is not None and [n.span.span_id for n in roots.items] == [root.span_id]
    by_span = queries.trace_tree(spans[-1].span_id, limit=5)  # any span's id finds its trace
    assert by_span is not None and by_span.root.span_id == root.span_id
    assert queries.trace_tree("f" * 32, limit=5) is None
    assert queries.children("f" * 32, None, limit=5) is None
    with pytest.raises(SpanNotInTrace):
        queries.children(trace_id, "f" * 16, limit=5)


def _session_turn(
    make_span: MakeSpan, start: float, session: str, user: str, question: str
) -> list[Span]:
    root, child = app_trace(
        make_span,
        start,
        "chat turn",
        session_id=session,
        user_id=user,
        input=question,
        output=f"answer to {question}",
        generation={"usage": Usage(10, 5), "cost_usd": 0.01},
    )
    return [root, child]  # the child carries no session or user of its own


def test_sessions_and_users_sum_every_span_of_their_traces(
    engine: Engine, make_span: MakeSpan
) -> None:
    store(
        engine,
        [
            *_session_turn(make_span, T0 + 1, "s1", "alice", "q1"),
            *_session_turn(make_span, T0 + 2, "s1", "alice", "q2"),
            *_session_turn(make_span, T0 + 3, "s2", "bob", "q3"),
            *_session_turn(make_span, T0 + 500, "s3", "carol", "outside the window"),
        ],
    )
    queries = TraceQueries(engine)
    window = (T0, T0 + 100)
    sessions = queries.sessions(window, limit=50)
    assert [s.key for s in sessions.items] == ["s2", "s1"]  # most recently active first
    s2, s1 = sessions.items
    assert (s1.traces, s1.spans, s1.input_tokens, s1.output_tokens) == (2, 4, 20, 10)
    assert s1.cost_usd == pytest.approx(0.02) and s1.user_id == "alice"
    assert (s1.first_seen, s1.last_seen) == (T0 + 1, T0 + 3)
    assert (s2.traces, s2.user_id) == (1, "bob")

    first = queries.sessions(window, limit=1)
    assert [s.key for s in first.items] == ["s2"] and first.next_key is not None
    second = queries.sessions(window, limit=1, after=first.next_key)
    assert [s.key for s in second.items] == ["s1"] and second.next_key is None

    users = queries.users(window, limit=50)
    assert [(u.key, u.traces, u.spans) for u in users.items] == [("bob", 1, 2), ("alice", 2, 4)]
    assert users.items[1].cost_usd == pytest.approx(0.02)
    assert users.items[1].input_tokens == 20
    page = queries.users(window, limit=1, after=queries.users(window, limit=1).next_key)
    assert [u.key for u in page.items] == ["alice"]


def test_a_session_reads_as_a_conversation_in_start_order(
    engine: Engine, make_span: MakeSpan
) -> None:
    turns = [_session_turn(make_span, T0 + 10 * i, "conv", "dana", f"q{i}") for i in (3, 1, 2)]
    store(engine, [span for turn in turns for span in turn])
    score(engine, "resolved", 1.0, session_id="conv")
    score(engine, "thumbs", 0.0, trace_id=turns[0][0].trace_id)
    queries = TraceQueries(engine)

    session = queries.session("conv", limit=50)
    assert session is not None
    assert [t.root.input for t in session.turns.items] == ["q1", "q2", "q3"]
    assert [t.root.output for t in session.turns.items] == [
        "answer to q1",
        "answer to q2",
        "answer to q3",
    ]
    last = session.turns.items[-1]
    assert last.root.trace_id == turns[0][0].trace_id and [s.name for s in last.scores] == [
        "thumbs"
    ]
    assert last.totals.cost_usd == pytest.approx(0.01) and last.totals.spans == 2
    assert [s.name for s in session.scores] == ["resolved"]
    assert (session.summary.traces, session.summary.spans, session.summary.user_id) == (
        3,
        6,
        "dana",
    )

    first = queries.session("conv", limit=2)
    assert first is not None and first.turns.next_key is not None
    rest = queries.session("conv", limit=2, after=first.turns.next_key)
    assert rest is not None and [t.root.input for t in rest.turns.items] == ["q3"]
    assert queries.session("nobody", limit=5) is None
