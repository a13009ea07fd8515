"""W3C Trace Context ids and `traceparent` parsing."""

from __future__ import annotations

import os
import re

import pytest

from keel.core.ids import (
    ParentContext,
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_traceparent,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


def test_a_valid_traceparent_gives_the_callers_ids() -> None:
    assert parse_traceparent(VALID) == ParentContext(TRACE, SPAN, sampled=True)


@pytest.mark.parametrize(
    ("flags", "sampled"),
    [("01", True), ("00", False), ("03", True), ("02", False), ("ff", True)],
)
def test_sampled_is_the_lowest_flag_bit(flags: str, sampled: bool) -> None:
    parent = parse_traceparent(f"00-{TRACE}-{SPAN}-{flags}")
    assert parent is not None
    assert parent.sampled is sampled


def test_uppercase_hex_is_normalised_to_lowercase() -> None:
    assert parse_traceparent(VALID.upper()) == ParentContext(TRACE, SPAN, sampled=True)


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_traceparent(f"  {VALID}\t") == ParentContext(TRACE, SPAN, sampled=True)


def test_version_ff_is_rejected() -> None:
    assert parse_traceparent(f"ff-{TRACE}-{SPAN}-01") is None


def test_all_zero_trace_id_is_rejected() -> None:
    assert parse_traceparent(f"00-{'0' * 32}-{SPAN}-01") is None


def test_all_zero_span_id_is_rejected() -> None:
    assert parse_traceparent(f"00-{TRACE}-{'0' * 16}-01") is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        "00-garbage",
        f"00-{TRACE}-{SPAN}",
        f"00-{TRACE[:-1]}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}0-01",
        f"00-{TRACE[:-1]}g-{SPAN}-01",
        f"0-{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-1",
        f"00_{TRACE}_{SPAN}_01",
        f"00-{TRACE}-{SPAN}-01-",
    ],
)
def test_malformed_values_give_none_without_raising(value: str | None) -> None:
    assert parse_traceparent(value) is None


def test_new_trace_id_is_32_lowercase_hex_digits() -> None:
    trace_id = new_trace_id()
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert trace_id != "0" * 32


def test_new_span_id_is_16_lowercase_hex_digits() -> None:
    span_id = new_span_id()
    assert re.fullmatch(r"[0-9a-f]{16}", span_id)
    assert span_id != "0" * 16


def test_new_ids_do_not_repeat() -> None:
    assert len({new_trace_id() for _ in range(100)}) == 100
    assert len({new_span_id() for _ in range(100)}) == 100


@pytest.mark.parametrize("sampled", [True, False])
def test_format_traceparent_round_trips(sampled: bool) -> None:
    trace_id, span_id = new_trace_id(), new_span_id()
    header = format_traceparent(trace_id, span_id, sampled)

    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", header)
    assert parse_traceparent(header) == ParentContext(trace_id, span_id, sampled)


def test_format_traceparent_marks_sampled_by_default() -> None:
    assert format_traceparent(TRACE, SPAN) == VALID


def test_forked_processes_do_not_repeat_each_others_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave at once
        os.write(write, f"{new_trace_id()} {new_span_id()}".encode())
        os._exit(0)
    os.close(write)
    child_ids = os.read(read, 100).decode().split()
    os.close(read)
    os.waitpid(pid, 0)
    assert child_ids != [new_trace_id(), new_span_id()]
