"""Read-side queries behind the REST API: trace lists, one trace's tree, sessions, users.

A trace is listed by its *head*: the span with no parent (the first one, should a
trace have several), or, while no root has arrived (an application's root span still
in flight, or never exported), the trace's earliest span. A trace belongs to a time
window when its head started inside it ([from, to), epoch seconds).

Pages are keyset pages: each query orders by a (time, id) key, descending for lists
(newest first) and ascending for conversations and children, and the next page
starts strictly after the last key returned. Inserts never shift a page, and with a
fixed window nothing that arrives later than its end can appear in it.

Filters that look at "any span of the trace" are correlated EXISTS probes on
`ix_spans_trace_id_start_time`, evaluated only for candidate heads, which the scan
of `ix_spans_start_time` yields newest first; user and session filters use their
partial indexes instead (`trace_id IN (SELECT trace_id ... WHERE user_id = ?)`).
Text search scans the window's spans in slices, newest first (`_search_heads`).
Totals and scores of a page come from one GROUP BY each over `trace_id IN (page)`.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, TypeVar

import orjson
from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Engine,
    FromClause,
    Select,
    Text,
    and_,
    case,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from keel.core.scores import Score
from keel.core.spans import Span
from keel.store.schema import scores_table, spans_table
from keel.store.scores import select_scores, trace_scores
from keel.store.spans import row_to_span
from keel.store.trace_shape import (
    Key,
    Rollup,
    TreeSpan,
    full_spans,
    load_shape,
    span_key,
)

T = TypeVar("T")
Window = tuple[float, float]
"""[from, to) in epoch seconds."""

ScoreOperator = Literal["eq", "ne", "gt", "gte", "lt", "lte"]
SCORE_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


@dataclass(frozen=True, slots=True)
class ScoreFilter:
    """A score of the trace named `name` whose value compares to `value` with `op`.

    A float compares with numeric and boolean scores (true is 1.0), a string with
    categorical and text scores (eq and ne only).
    """

    name: str
    op: ScoreOperator
    value: float | str


@dataclass(frozen=True, slots=True)
class TraceFilter:
    """What a trace must match to be listed; unset fields match everything."""

    name: str | None = None  # the head span's name
    user: str | None = None  # any span of the trace
    session: str | None = None  # any span of the trace
    tags: tuple[str, ...] = ()  # each on some span of the trace
    model: str | None = None  # alias or upstream model of any span
    status: Literal["ok", "error"] | None = None  # error: any span failed
    min_latency_ms: float | None = None  # the head span's latency
    min_cost: float | None = None  # the trace's total cost in USD
    scores: tuple[ScoreFilter, ...] = ()
    text: str | None = None  # substring of any span's input or output


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Items of one page and the key to pass for the next one (None on the last page)."""

    items: list[T]
    next_key: Key | None


@dataclass(frozen=True, slots=True)
class TraceSummary:
    """One trace in a list: its head span, its totals and its scores."""

    root: Span
    totals: Rollup
    scores: list[Score]


@dataclass(frozen=True, slots=True)
class TraceTree:
    """A trace top-down: the first spans breadth-first, the head, totals and scores."""

    root: Span
    totals: Rollup
    spans: list[TreeSpan]
    scores: list[Score]


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """A session's or a user's activity: spans carrying the id started in the window.

    `traces`, `first_seen` and `last_seen` count the spans that carry the id; `spans`,
    tokens and cost count every span of those traces (child spans often carry no
    user or session of their own).
    """

    key: str
    traces: int
    first_seen: float
    last_seen: float
    spans: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class SessionDetail:
    """A session as a conversation: its traces in start order (one page) and its scores."""

    summary: GroupSummary
    turns: Page[TraceSummary]
    scores: list[Score] = field(default_factory=list)


class SpanNotInTrace(LookupError):
    """The parent span asked for is not part of the trace."""


class JsonArrayContains(FunctionElement[bool]):
    """`array` (a JSON array column) holds the string `item`; compiled once per dialect."""

    type = Boolean()
    name = "json_array_contains"
    inherit_cache = True


@compiles(JsonArrayContains, "sqlite")
def _contains_sqlite(element: JsonArrayContains, compiler: SQLCompiler, **kw: Any) -> str:
    array, item = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"EXISTS (SELECT 1 FROM json_each({array}) WHERE json_each.value = {item})"


@compiles(JsonArrayContains, "postgresql")
def _contains_postgresql(element: JsonArrayContains, compiler: SQLCompiler, **kw: Any) -> str:
    array, item = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"({array} @> jsonb_build_array(CAST({item} AS TEXT)))"


class TraceQueries:
    """Read queries for the API; every method is blocking (call it off the event loop)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def list_traces(
        self, window: Window, where: TraceFilter, limit: int, after: Key | None = None
    ) -> Page[TraceSummary]:
        """Traces whose head started in `window`, newest first, matching `where`.

        `where.text` is a case-insensitive substring search over the JSON text of the input
        and output of the spans that started in the window (SQLite folds ASCII letters
        only); see `_search_heads` for how it avoids probing every trace.
        """
        with self._engine.connect() as connection:
            if where.text:
                heads = _search_heads(connection, window, where, limit, after)
            else:
                heads = _heads(connection, window, where, limit, after)
            heads, next_key = _cut(heads, limit, span_key)
            return Page(_summaries(connection, heads), next_key)

    def trace_tree(self, trace_or_span_id: str, limit: int) -> TraceTree | None:
        """The trace (by trace id, or the id of one of its spans), its first `limit` spans
        breadth-first with subtree rollups; None when no such trace or span is stored."""
        with self._engine.connect() as connection:
            shape = load_shape(connection, trace_or_span_id)
            if shape is None:
                return None
            chosen = shape.order[:limit]
            wanted = [shape.head.span_id, *(node.span.span_id for node, _ in chosen)]
            full = full_spans(connection, shape, wanted)
            scores = select_scores(connection, trace_scores(shape.trace_id))
        spans = [shape.tree_span(full, node, depth) for node, depth in chosen]
        return TraceTree(full.get(shape.head.span_id, shape.head), shape.totals, spans, scores)

    def children(
        self, trace_or_span_id: str, parent: str | None, limit: int, after: Key | None = None
    ) -> Page[TreeSpan] | None:
        """One page of `parent`'s children (the trace's roots when None), in start order.

        None when the trace is unknown; SpanNotInTrace when `parent` is not in it.
        """
        with self._engine.connect() as connection:
            shape = load_shape(connection, trace_or_span_id)
            if shape is None:
                return None
            if parent is None:
                candidates = shape.roots
            elif parent in shape.nodes:
                candidates = shape.nodes[parent].children
            else:
                raise SpanNotInTrace(f"span {parent!r} is not part of trace {shape.trace_id}")
            if after is not None:
                candidates = [node for node in candidates if span_key(node.span) > after]
            page, next_key = _cut(candidates, limit, lambda node: span_key(node.span))
            full = full_spans(connection, shape, [node.span.span_id for node in page])
        items = [shape.tree_span(full, node, shape.depths[node.span.span_id]) for node in page]
        return Page(items, next_key)

    def sessions(self, window: Window, limit: int, after: Key | None = None) -> Page[GroupSummary]:
        """Sessions with spans started in `window`, most recently active first."""
        return self._groups("session_id", window, limit, after)

    def users(self, window: Window, limit: int, after: Key | None = None) -> Page[GroupSummary]:
        """Users with spans started in `window`, most recently active first."""
        return self._groups("user_id", window, limit, after)

    def session(
        self, session_id: str, limit: int, after: Key | None = None
    ) -> SessionDetail | None:
        """The session's traces in start order (a page of them) and its scores; None if unknown."""
        t = spans_table.c
        s = spans_table.alias("s")
        in_session = select(t.trace_id).where(t.session_id == session_id)
        query = select(s).where(s.c.trace_id.in_(in_session), _is_head(s))
        if after is not None:
            query = query.where(_key_after(s, after))
        query = query.order_by(s.c.start_time, s.c.span_id).limit(limit + 1)
        with self._engine.connect() as connection:
            activity = _activity(connection, "session_id", None, keys=[session_id])
            if not activity:
                return None
            summary = _with_usage(connection, "session_id", None, activity)[0]
            heads = [row_to_span(row) for row in connection.execute(query).mappings()]
            heads, next_key = _cut(heads, limit, span_key)
            turns = Page(_summaries(connection, heads), next_key)
            scores = select_scores(connection, scores_table.c.session_id == session_id)
        return SessionDetail(summary, turns, scores)

    def _groups(
        self, column: str, window: Window, limit: int, after: Key | None
    ) -> Page[GroupSummary]:
        with self._engine.connect() as connection:
            found = _activity(connection, column, window, limit=limit + 1, after=after)
            found, next_key = _cut(found, limit, lambda group: (group.last_seen, group.key))
            return Page(_with_usage(connection, column, window, found), next_key)


# --- trace heads and filters -----------------------------------------------------------


def _before(a: FromClause, b: FromClause) -> ColumnElement[bool]:
    """`a` sorts before `b` by (start_time, span_id); the first term can use an index."""
    return and_(
        a.c.start_time <= b.c.start_time,
        or_(a.c.start_time < b.c.start_time, a.c.span_id < b.c.span_id),
    )


def _is_head(s: FromClause) -> ColumnElement[bool]:
    """`s` is its trace's head: the first root, or the first span of a trace with no root."""
    earlier_root = spans_table.alias("earlier_root")
    earlier_span = spans_table.alias("earlier_span")
    any_root = spans_table.alias("any_root")
    same = _same_trace
    return or_(
        and_(
            s.c.parent_span_id.is_(None),
            ~exists().where(
                same(earlier_root, s),
                earlier_root.c.parent_span_id.is_(None),
                _before(earlier_root, s),
            ),
        ),
        and_(
            s.c.parent_span_id.is_not(None),
            # Cheap first: all but a trace's first span fail here on the first index entry.
            ~exists().where(same(earlier_span, s), _before(earlier_span, s)),
            ~exists().where(same(any_root, s), any_root.c.parent_span_id.is_(None)),
        ),
    )


def _same_trace(t: FromClause, s: FromClause) -> ColumnElement[bool]:
    return t.c.trace_id == s.c.trace_id


def _any_span(s: FromClause, condition: Callable[[FromClause], ColumnElement[bool]]) -> Any:
    t = spans_table.alias()
    return exists().where(_same_trace(t, s), condition(t))


def _heads(
    connection: Connection,
    window: Window,
    where: TraceFilter,
    limit: int,
    after: Key | None,
    among: Collection[str] | None = None,
) -> list[Span]:
    """Up to `limit + 1` trace heads in `window` matching `where` (text aside), newest
    first; only of the traces whose ids are `among`, when given."""
    assert not where.text, "text is searched by _search_heads"
    s = spans_table.alias("s")
    # Among few candidate traces, their trace id index must lead: `+ 0` keeps the planners
    # (SQLite's and PostgreSQL's) off the start time index, which would walk every head
    # in the window and test each against the list. Among many, that walk finds the
    # newest quickly, and leading by trace id would test every candidate's spans.
    few = among is not None and len(among) <= _FEW_CANDIDATES
    start = s.c.start_time + 0 if few else s.c.start_time
    query = select(s).where(
        start >= window[0], start < window[1], _is_head(s), *_trace_conditions(s, where)
    )
    if among is not None:
        query = query.where(s.c.trace_id.in_(_strings(connection, among)))
    if after is not None:
        query = query.where(_key_before(s, after, start))
    query = query.order_by(start.desc(), s.c.span_id.desc()).limit(limit + 1)
    return [row_to_span(row) for row in connection.execute(query).mappings()]


# Spans examined by the first slice of a text search; each further slice doubles.
_SEARCH_SLICE_SPANS = 20_000
# Up to this many candidate traces, a search's head query starts from their ids.
_FEW_CANDIDATES = 1_000


def _search_heads(
    connection: Connection, window: Window, where: TraceFilter, limit: int, after: Key | None
) -> list[Span]:
    """`_heads` for a filter with text: slices of the window, newest first, scanned in order.

    Probing every candidate trace for the text (an index lookup and a row read per span)
    took seconds over a million spans when few traces match. Instead each slice of the
    window's spans is scanned sequentially for the text, and the traces found are the
    candidates of the head query. A trace's head starts no later than its spans, so once
    `limit + 1` matching heads started inside the slices scanned so far, no trace still
    unfound (all its matching spans are older) can rank before them.
    """
    assert where.text is not None
    needle = orjson.dumps(where.text).decode()[1:-1]  # as the JSON text spells it
    rest = replace(where, text=None)
    t = spans_table.c
    contains = _like_sqlite if connection.dialect.name == "sqlite" else _like_any_case
    found: set[str] = set()
    high, size = window[1], _SEARCH_SLICE_SPANS
    while True:
        low = connection.execute(
            select(t.start_time)
            .where(t.start_time >= window[0], t.start_time < high)
            .order_by(t.start_time.desc())
            .offset(size - 1)
            .limit(1)
        ).scalar()
        low = window[0] if low is None else low
        matching = select(t.trace_id).where(
            t.start_time >= low,
            t.start_time < high,
            or_(contains(t.input, needle), contains(t.output, needle)),
        )
        found.update(connection.execute(matching.distinct()).scalars())
        heads: list[Span] = []
        if found:
            heads = _heads(connection, window, rest, limit, after, found)
        settled = sum(1 for head in heads if head.start_time >= low)
        if settled > limit or low <= window[0]:
            return heads
        high, size = low, size * 2


def _strings(connection: Connection, strings: Collection[str]) -> Select[tuple[str]]:
    """`strings` as a subquery: one bound parameter (a JSON array), however many values
    (SQLite binds at most 32,766)."""
    array = orjson.dumps(sorted(strings)).decode()
    if connection.dialect.name == "sqlite":
        values = func.json_each(literal(array)).table_valued("value")
    else:
        values = func.jsonb_array_elements_text(sql_cast(literal(array), JSONB)).table_valued(
            "value"
        )
    return select(values.c.value)


def _like_sqlite(column: ColumnElement[Any], needle: str) -> ColumnElement[bool]:
    # SQLite's LIKE ignores ASCII case already; lower() on both sides doubled the scan.
    return sql_cast(column, Text).contains(needle, autoescape=True)


def _like_any_case(column: ColumnElement[Any], needle: str) -> ColumnElement[bool]:
    return sql_cast(column, Text).icontains(needle, autoescape=True)


def _trace_conditions(s: FromClause, where: TraceFilter) -> list[ColumnElement[bool]]:
    t = spans_table.c
    out: list[ColumnElement[bool]] = []
    if where.name is not None:
        out.append(s.c.name == where.name)
    if where.user is not None:
        out.append(s.c.trace_id.in_(select(t.trace_id).where(t.user_id == where.user)))
    if where.session is not None:
        out.append(s.c.trace_id.in_(select(t.trace_id).where(t.session_id == where.session)))
    out.extend(_any_span(s, _tagged(tag)) for tag in where.tags)
    if where.model is not None:
        model = where.model
        out.append(_any_span(s, lambda a: or_(a.c.alias == model, a.c.model == model)))
    if where.status is not None:
        failed = _any_span(s, lambda a: a.c.status == "error")
        out.append(failed if where.status == "error" else ~failed)
    if where.min_latency_ms is not None:
        out.append(s.c.latency_ms >= where.min_latency_ms)
    if where.min_cost is not None:
        a = spans_table.alias("cost")
        total = select(func.coalesce(func.sum(a.c.cost_usd), 0.0)).where(_same_trace(a, s))
        out.append(total.scalar_subquery() >= where.min_cost)
    for wanted in where.scores:
        out.append(_has_score(s, wanted))
    return out  # where.text: see _search_heads


def _tagged(tag: str) -> Callable[[FromClause], ColumnElement[bool]]:
    return lambda a: JsonArrayContains(a.c.tags, literal(tag))


def _has_score(s: FromClause, wanted: ScoreFilter) -> Any:
    c = scores_table.alias().c
    compare = SCORE_OPERATORS[wanted.op]
    column = c.string_value if isinstance(wanted.value, str) else c.value
    return exists().where(
        c.trace_id == s.c.trace_id, c.name == wanted.name, compare(column, wanted.value)
    )


def _key_before(
    s: FromClause, key: Key, start: ColumnElement[float] | None = None
) -> ColumnElement[bool]:
    start = s.c.start_time if start is None else start
    return and_(start <= key[0], or_(start < key[0], s.c.span_id < key[1]))


def _key_after(s: FromClause, key: Key) -> ColumnElement[bool]:
    return and_(
        s.c.start_time >= key[0],
        or_(s.c.start_time > key[0], s.c.span_id > key[1]),
    )


def _cut(items: list[T], limit: int, key: Callable[[T], Key]) -> tuple[list[T], Key | None]:
    """The first `limit` of `limit + 1` fetched items, and the next key if there were more."""
    if len(items) <= limit:
        return items, None
    page = items[:limit]
    return page, key(page[-1])


# --- totals and scores of a page --------------------------------------------------------


def _summaries(connection: Connection, heads: list[Span]) -> list[TraceSummary]:
    if not heads:
        return []
    ids = [head.trace_id for head in heads]
    totals = _trace_totals(connection, ids)
    scores: dict[str, list[Score]] = defaultdict(list)
    for score in select_scores(connection, scores_table.c.trace_id.in_(ids)):
        scores[score.trace_id or ""].append(score)
    return [
        TraceSummary(head, totals[head.trace_id], scores.get(head.trace_id, [])) for head in heads
    ]


def _trace_totals(connection: Connection, trace_ids: Sequence[str]) -> dict[str, Rollup]:
    t = spans_table.c
    query = (
        select(
            t.trace_id,
            func.count(),
            func.min(t.start_time),
            func.max(t.end_time),
            func.sum(t.input_tokens),
            func.sum(t.output_tokens),
            func.sum(t.cost_usd),
            func.sum(case((t.unpriced, 1), else_=0)),
            func.sum(case((t.status == "error", 1), else_=0)),
        )
        .where(t.trace_id.in_(trace_ids))
        .group_by(t.trace_id)
    )
    return {
        row[0]: Rollup(row[1], row[2], row[3], *_sums(row[4:7]), bool(row[7]), int(row[8] or 0))
        for row in connection.execute(query)
    }


def _sums(row: Sequence[Any]) -> tuple[int, int, float]:
    """Input tokens, output tokens, cost: SQL SUMs (NULL over no values) as numbers."""
    return int(row[0] or 0), int(row[1] or 0), float(row[2] or 0.0)


# --- sessions and users -----------------------------------------------------------------


def _activity(
    connection: Connection,
    column: str,
    window: Window | None,
    *,
    keys: Sequence[str] | None = None,
    limit: int | None = None,
    after: Key | None = None,
) -> list[GroupSummary]:
    """Per id in `column`: traces, first and last seen, over the spans carrying it."""
    t = spans_table.c
    group = t[column]
    last = func.max(t.end_time)
    query = select(group, func.count(func.distinct(t.trace_id)), func.min(t.start_time), last)
    query = query.where(group.is_not(None) if keys is None else group.in_(keys))
    if window is not None:
        query = query.where(t.start_time >= window[0], t.start_time < window[1])
    query = query.group_by(group)
    if after is not None:
        query = query.having(or_(last < after[0], and_(last == after[0], group < after[1])))
    query = query.order_by(last.desc(), group.desc())
    if limit is not None:
        query = query.limit(limit)
    return [
        GroupSummary(key=row[0], traces=row[1], first_seen=row[2], last_seen=row[3])
        for row in connection.execute(query)
    ]


def _with_usage(
    connection: Connection, column: str, window: Window | None, groups: list[GroupSummary]
) -> list[GroupSummary]:
    """`groups` with spans, tokens, cost and user summed over every span of their traces."""
    if not groups:
        return []
    t = spans_table.c
    members = select(t[column].label("key"), t.trace_id).where(
        t[column].in_([group.key for group in groups])
    )
    if window is not None:
        members = members.where(t.start_time >= window[0], t.start_time < window[1])
    m = members.distinct().subquery("members")
    s = spans_table.alias("s")
    query = (
        select(
            m.c.key,
            func.count(),
            func.sum(s.c.input_tokens),
            func.sum(s.c.output_tokens),
            func.sum(s.c.cost_usd),
            func.max(s.c.user_id),
        )
        .select_from(m.join(s, s.c.trace_id == m.c.trace_id))
        .group_by(m.c.key)
    )
    usage = {row[0]: row for row in connection.execute(query)}
    return [_add_usage(group, usage.get(group.key), column) for group in groups]


def _add_usage(group: GroupSummary, row: Sequence[Any] | None, column: str) -> GroupSummary:
    if row is None:
        return group
    tokens_in, tokens_out, cost = _sums(row[2:5])
    user = group.key if column == "user_id" else row[5]
    return replace(
        group,
        spans=row[1],
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost_usd=cost,
        user_id=user,
    )
