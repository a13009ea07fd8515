"""Trace trees: nesting, orphans, rollups, deep chains."""

from __future__ import annotations

from keel.core.spans import Span
from keel.core.trees import build_tree
from keel.core.usage import Usage


def _span(span_id: str, parent: str | None, start: float, **fields: object) -> Span:
    return Span(
        trace_id="t" * 32, span_id=span_id, parent_span_id=parent, name=span_id,
        kind="span", start_time=start, end_time=start + 1, **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def test_children_nest_in_start_order_and_roll_up_tokens_cost_and_errors() -> None:
    spans = [
        _span("llm2", "root", 3.0, usage=Usage(10, 2), cost_usd=0.5),
        _span("root", None, 0.0),
        _span("llm1", "chain", 1.5, usage=Usage(100, 20), cost_usd=1.0),
        _span("chain", "root", 1.0, status="error"),
        _span("tool", "chain", 2.0, usage=Usage(5, 0), unpriced=True),
    ]
    (root,) = build_tree(spans)
    assert [c.span.span_id for c in root.children] == ["chain", "llm2"]
    chain = root.children[0]
    assert [c.span.span_id for c in chain.children] == ["llm1", "tool"]
    assert (chain.input_tokens, chain.output_tokens, chain.cost_usd) == (105, 20, 1.0)
    assert chain.unpriced and chain.errors == 1
    assert (root.input_tokens, root.output_tokens, root.cost_usd) == (115, 22, 1.5)


def test_a_span_whose_parent_is_missing_becomes_a_root() -> None:
    roots = build_tree([_span("a", None, 0.0), _span("b", "never-arrived", 1.0)])
    assert [r.span.span_id for r in roots] == ["a", "b"]


def test_a_twenty_thousand_span_chain_does_not_recurse() -> None:
    spans = [_span("s0", None, 0.0, usage=Usage(1, 1))]
    spans += [_span(f"s{i}", f"s{i - 1}", float(i), usage=Usage(1, 1)) for i in range(1, 20_000)]
    (root,) = build_tree(spans)
    assert root.input_tokens == 20_000
