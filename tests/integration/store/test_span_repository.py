"""Span queries on both dialects: generation listing by window and filters, traces, lookups."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from keel.core.spans import Span
from keel.store.spans import SpanRepository
from keel.store.writer import SpanWriter

MakeSpan = Callable[..., Span]
T0 = 1_750_000_000.0


def _store(engine: Engine, spans: list[Span]) -> SpanRepository:
    with SpanWriter(engine, flush_interval_s=0.02) as writer:
        for span in spans:
            writer.emit(span)
    assert writer.stats().written == len(spans)
    return SpanRepository(engine)


def _ids(spans: list[Span]) -> list[str]:
    return [span.name for span in spans]


def test_list_generations_window_filters_and_order(engine: Engine, make_span: MakeSpan) -> None:
    spans = [
        make_span(name="g0", start_time=T0 + 0, alias="fast", user_id="ann", session_id="s1"),
        make_span(name="g1", start_time=T0 + 10, alias="smart", user_id="bob", session_id="s1"),
        make_span(name="g2", start_time=T0 + 20, alias="fast", user_id="bob", session_id="s2"),
        make_span(name="g3", start_time=T0 + 30, alias="fast", user_id="ann", session_id="s2"),
        make_span(name="r", start_time=T0 + 15, kind="retrieval", alias="fast", user_id="ann"),
        make_span(name="old", start_time=T0 - 3600, alias="fast", user_id="ann"),
    ]
    repo = _store(engine, spans)

    assert _ids(repo.list_calls(since=T0)) == ["g3", "g2", "g1", "g0"]
    assert _ids(repo.list_calls(since=T0 + 10, until=T0 + 30)) == ["g2", "g1"]
    assert _ids(repo.list_calls(since=T0, alias="fast")) == ["g3", "g2", "g0"]
    assert _ids(repo.list_calls(since=T0, user="ann")) == ["g3", "g0"]
    assert _ids(repo.list_calls(since=T0, session="s1")) == ["g1", "g0"]
    assert _ids(repo.list_calls(since=T0, alias="fast", user="bob")) == ["g2"]
    assert _ids(repo.list_calls(since=T0, limit=2)) == ["g3", "g2"]
    assert _ids(repo.list_calls(since=0, user="ann")) == ["g3", "g0", "old"]
    assert repo.list_calls(since=T0 + 31) == []
    assert repo.list_calls(since=T0, alias="nope") == []


def test_trace_returns_the_tree_in_start_order(engine: Engine, make_span: MakeSpan) -> None:
    root = make_span(name="rag answer", kind="chain", start_time=T0, trace_id="a" * 32)
    children = [
        make_span(
            name=name,
            kind=kind,
            start_time=T0 + offset,
            trace_id=root.trace_id,
            parent_span_id=root.span_id,
        )
        for name, kind, offset in [
            ("generate", "generation", 0.3),
            ("embed", "embedding", 0.01),
            ("search", "retrieval", 0.1),
        ]
    ]
    other = make_span(name="other trace", start_time=T0 + 0.05)
    repo = _store(engine, [*children, other, root])

    tree = repo.trace(root.trace_id)
    assert _ids(tree) == ["rag answer", "embed", "search", "generate"]
    assert tree[0] == root
    assert {span.parent_span_id for span in tree[1:]} == {root.span_id}
    assert repo.trace("b" * 32) == []


def test_get_returns_none_for_an_unknown_id(engine: Engine) -> None:
    assert SpanRepository(engine).get("0123456789abcdef") is None
