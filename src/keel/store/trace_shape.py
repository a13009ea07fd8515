"""One trace's shape for the API: the tree from its small columns, rollups, then payloads.

A 20,000-span trace costs one narrow scan of its ids, times, tokens and cost; the full
rows (input, output, attributes) are read only for the spans a response returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from keel.core.spans import Span
from keel.core.trees import TreeNode, breadth_first, build_tree
from keel.core.usage import Usage
from keel.store.schema import spans_table
from keel.store.spans import row_to_span

Key = tuple[float, str]
"""A page key: (time in epoch seconds, id)."""


@dataclass(frozen=True, slots=True)
class Rollup:
    """Totals over a set of spans (a whole trace, or one span's subtree)."""

    spans: int
    start_time: float
    end_time: float
    input_tokens: int
    output_tokens: int
    cost_usd: float
    unpriced: bool  # some span has usage but no price: cost_usd is a lower bound
    errors: int

    @property
    def latency_ms(self) -> float:
        """From the first start to the last end, in milliseconds."""
        return (self.end_time - self.start_time) * 1000.0


@dataclass(frozen=True, slots=True)
class TreeSpan:
    """One span of a tree, its depth (roots are 0), child count and subtree rollup."""

    span: Span
    depth: int
    child_count: int
    subtree: Rollup


def span_key(span: Span) -> Key:
    """The keyset-page key of a span: (start time, span id)."""
    return (span.start_time, span.span_id)


_SKELETON = (
    "span_id", "trace_id", "parent_span_id", "name", "kind", "start_time", "end_time",
    "status", "input_tokens", "output_tokens", "cost_usd", "unpriced",
)  # fmt: skip


class TraceShape:
    """A whole trace's tree from its small columns only: nesting, depths, subtree rollups.

    Payloads (input, output, attributes...) are read afterwards for the spans a
    response returns, so a 20,000-span trace costs one narrow scan, not 20,000 payloads.
    """

    def __init__(self, trace_id: str, skeleton: list[Span]) -> None:
        self.trace_id = trace_id
        self.roots = build_tree(skeleton)
        self.order = breadth_first(self.roots)
        self.nodes = {node.span.span_id: node for node, _ in self.order}
        self.depths = {node.span.span_id: depth for node, depth in self.order}
        self.head = min(skeleton, key=lambda s: (s.parent_span_id is not None, *span_key(s)))
        extent: dict[str, tuple[int, float, float]] = {}
        for node, _ in reversed(self.order):  # children before their parents
            count, start, end = 1, node.span.start_time, node.span.end_time
            for child in node.children:
                c_count, c_start, c_end = extent[child.span.span_id]
                count += c_count
                start = c_start if c_start < start else start
                end = c_end if c_end > end else end
            extent[node.span.span_id] = (count, start, end)
        self._extent = extent
        rollups = [self.rollup(root) for root in self.roots]
        self.totals = Rollup(
            spans=sum(r.spans for r in rollups),
            start_time=min(r.start_time for r in rollups),
            end_time=max(r.end_time for r in rollups),
            input_tokens=sum(r.input_tokens for r in rollups),
            output_tokens=sum(r.output_tokens for r in rollups),
            cost_usd=sum(r.cost_usd for r in rollups),
            unpriced=any(r.unpriced for r in rollups),
            errors=sum(r.errors for r in rollups),
        )

    def rollup(self, node: TreeNode) -> Rollup:
        """`node`'s subtree totals."""
        count, start, end = self._extent[node.span.span_id]
        return Rollup(
            spans=count,
            start_time=start,
            end_time=end,
            input_tokens=node.input_tokens,
            output_tokens=node.output_tokens,
            cost_usd=node.cost_usd,
            unpriced=node.unpriced,
            errors=node.errors,
        )

    def tree_span(self, full: Mapping[str, Span], node: TreeNode, depth: int) -> TreeSpan:
        """`node` placed in the tree, with its complete row from `full` when it was read."""
        span = full.get(node.span.span_id, node.span)
        return TreeSpan(span, depth, len(node.children), self.rollup(node))


def load_shape(connection: Connection, trace_or_span_id: str) -> TraceShape | None:
    t = spans_table.c
    columns = [t[name] for name in _SKELETON]
    rows = connection.execute(select(*columns).where(t.trace_id == trace_or_span_id)).all()
    trace_id = trace_or_span_id
    if not rows:
        found = connection.execute(select(t.trace_id).where(t.span_id == trace_or_span_id)).scalar()
        if found is None:
            return None
        trace_id = found
        rows = connection.execute(select(*columns).where(t.trace_id == trace_id)).all()
    return TraceShape(trace_id, [_skeleton_span(row) for row in rows])


def _skeleton_span(row: Sequence[Any]) -> Span:
    # Positional: name lookups on 20,000 rows cost more than the query.
    span_id, trace_id, parent, name, kind, start, end, status, tokens_in, tokens_out = row[:10]
    usage = None
    if tokens_in is not None or tokens_out is not None:
        usage = Usage(input_tokens=tokens_in or 0, output_tokens=tokens_out or 0)
    return Span(
        trace_id, span_id, name, kind, start, end, parent, status,
        usage=usage, cost_usd=row[10], unpriced=bool(row[11]),
    )  # fmt: skip


def full_spans(
    connection: Connection, shape: TraceShape, span_ids: Iterable[str]
) -> dict[str, Span]:
    """The complete rows of `span_ids` (all of the trace's when that is every span)."""
    t = spans_table.c
    wanted = set(span_ids)
    query = select(spans_table).where(t.trace_id == shape.trace_id)
    if len(wanted) < len(shape.nodes):
        query = query.where(t.span_id.in_(wanted))
    return {row["span_id"]: row_to_span(row) for row in connection.execute(query).mappings()}
