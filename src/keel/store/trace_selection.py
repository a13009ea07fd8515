"""Traces picked by a filter, for a dataset: the trace list's filters plus the prompt used.

`TraceSelector.roots` returns the root spans of the newest traces in a window that match
a `TraceFilter` (the filters of `GET /api/traces`, through `TraceQueries.list_traces`).
Naming a prompt also keeps only traces where some span carries the span attribute
`keel.prompt.name` (and `keel.prompt.version`, when a version is named), which the
gateway and the SDK's `get_prompt` record: the trace list is read page by page, newest
first, and each page's trace ids are checked in one query until `limit` traces are
found or the window is read to its end.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, select

from keel.core.spans import Span
from keel.store.queries import TraceFilter, TraceQueries, Window
from keel.store.schema import spans_table

_PAGE = 500
PROMPT_NAME = "keel.prompt.name"
PROMPT_VERSION = "keel.prompt.version"


class TraceSelector:
    """Root spans of the traces a filter selects (blocking; call it off the event loop)."""

    def __init__(self, engine: Engine, queries: TraceQueries) -> None:
        self._engine = engine
        self._queries = queries

    def roots(
        self,
        window: Window,
        where: TraceFilter,
        limit: int,
        *,
        prompt: str | None = None,
        prompt_version: int | None = None,
    ) -> list[Span]:
        """Up to `limit` root spans, newest first, of the traces that match."""
        if prompt is None:
            return [s.root for s in self._queries.list_traces(window, where, limit).items]
        found: list[Span] = []
        after = None
        while len(found) < limit:
            page = self._queries.list_traces(window, where, _PAGE, after)
            roots = [summary.root for summary in page.items]
            using = self._using_prompt([r.trace_id for r in roots], prompt, prompt_version)
            found.extend(root for root in roots if root.trace_id in using)
            if page.next_key is None:
                break
            after = page.next_key
        return found[:limit]

    def _using_prompt(self, trace_ids: Sequence[str], prompt: str, version: int | None) -> set[str]:
        if not trace_ids:
            return set()
        t = spans_table.c
        query = select(t.trace_id).where(
            t.trace_id.in_(trace_ids), t.attributes[PROMPT_NAME].as_string() == prompt
        )
        if version is not None:
            # Compared as text: a cast to integer fails on PostgreSQL for any span whose
            # attribute holds something else ("v2" from another tool).
            query = query.where(t.attributes[PROMPT_VERSION].as_string() == str(version))
        with self._engine.connect() as connection:
            return set(connection.execute(query.distinct()).scalars())
