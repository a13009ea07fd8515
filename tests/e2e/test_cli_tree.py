"""`keel traces tree` and `keel sessions list` on a recorded tree (both dialects)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine

from keel.core.spans import Span
from keel.core.usage import Usage
from keel.store.writer import SpanWriter

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def rag_trace(engine: Engine, make_span: Callable[..., Span]) -> list[Span]:
    """answer -> (retrieve, generate -> tool), and a second session's short trace."""
    now = time.time() - 60
    spans = [
        make_span(trace_id=TRACE, span_id="a" * 16, name="answer", kind="chain",
                  start_time=now, end_time=now + 2.0, session_id="conv-1", user_id="ann"),
        make_span(trace_id=TRACE, span_id="b" * 16, parent_span_id="a" * 16, name="retrieve",
                  kind="retrieval", start_time=now + 0.1, end_time=now + 0.4,
                  session_id="conv-1", usage=None, cost_usd=None),
        make_span(trace_id=TRACE, span_id="c" * 16, parent_span_id="a" * 16, name="generate",
                  kind="generation", start_time=now + 0.5, end_time=now + 1.9, model="gpt-4o-mini",
                  usage=Usage(1000, 200), cost_usd=0.00027, session_id="conv-1"),
        make_span(trace_id=TRACE, span_id="d" * 16, parent_span_id="c" * 16, name="lookup",
                  kind="tool", start_time=now + 0.6, end_time=now + 0.7, status="error",
                  error="timeout", session_id="conv-1", usage=None, cost_usd=None),
        make_span(trace_id="e" * 32, span_id="e" * 16, name="other", kind="span",
                  start_time=now + 5, end_time=now + 6, session_id="conv-2", usage=None,
                  cost_usd=None),
    ]  # fmt: skip
    with SpanWriter(engine, flush_interval_s=0.02) as writer:
        for span in spans:
            writer.emit(span)
    return spans


def test_tree_prints_nesting_offsets_and_subtree_totals(
    rag_trace: list[Span], run_cli: Any
) -> None:
    result = run_cli("traces", "tree", TRACE)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("answer [chain]  +0.0 ms  2000.0 ms  tokens 1000/200  $0.000270")
    assert lines[1].startswith("├─ retrieve [retrieval]  +100.0 ms  300.0 ms")
    assert lines[2].startswith("└─ generate [generation]  +500.0 ms  1400.0 ms  gpt-4o-mini")
    assert lines[3].startswith("   └─ lookup [tool]  +600.0 ms  100.0 ms")
    assert lines[3].endswith("ERROR timeout")


def test_tree_json_and_lookup_by_a_span_id(rag_trace: list[Span], run_cli: Any) -> None:
    result = run_cli("traces", "tree", "d" * 16, "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["name"], r["depth"]) for r in rows] == [
        ("answer", 0), ("retrieve", 1), ("generate", 1), ("lookup", 2),
    ]  # fmt: skip
    assert rows[0]["subtree"]["errors"] == 1
    assert rows[2]["subtree"]["input_tokens"] == 1000


def test_tree_of_an_unknown_id_is_a_one_line_error(rag_trace: list[Span], run_cli: Any) -> None:
    result = run_cli("traces", "tree", "f" * 32)
    assert result.exit_code == 1
    assert "no trace or span with id" in result.output


def test_sessions_list_totals_each_session(rag_trace: list[Span], run_cli: Any) -> None:
    result = run_cli("sessions", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["session"]: r for r in map(json.loads, result.output.splitlines())}
    assert set(rows) == {"conv-1", "conv-2"}
    one = rows["conv-1"]
    assert (one["traces"], one["spans"], one["user"]) == (1, 4, "ann")
    assert (one["input_tokens"], one["output_tokens"]) == (1000, 200)
    assert one["cost_usd"] == pytest.approx(0.00027)
    table = run_cli("sessions", "list")
    assert "conv-1" in table.output and "2 session(s)" in table.output
