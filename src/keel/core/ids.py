"""Trace and span ids in the W3C Trace Context format, and `traceparent` parsing."""

from __future__ import annotations

import os
import random
import re
from typing import NamedTuple

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_INVALID_TRACE = "0" * 32
_INVALID_SPAN = "0" * 16


# Ids need to be unique, not secret: a private Mersenne Twister (seeded from the OS, as
# OpenTelemetry's SDK does it) costs a fraction of an os.urandom system call per id, and
# leaves the global `random` state of the host application alone.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)  # forked workers must not repeat each other


def new_trace_id() -> str:
    """A random, non-zero 128-bit trace id as 32 lowercase hex digits."""
    return "%032x" % (_ids.getrandbits(128) or 1)


def new_span_id() -> str:
    """A random, non-zero 64-bit span id as 16 lowercase hex digits."""
    return "%016x" % (_ids.getrandbits(64) or 1)


class ParentContext(NamedTuple):
    """The caller's trace id and span id taken from an incoming `traceparent`."""

    trace_id: str
    span_id: str
    sampled: bool


def parse_traceparent(value: str | None) -> ParentContext | None:
    """Parse a W3C `traceparent` header; None when absent or malformed (never raises)."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    if version == "ff" or trace_id == _INVALID_TRACE or span_id == _INVALID_SPAN:
        return None
    return ParentContext(trace_id, span_id, bool(int(flags, 16) & 1))


def format_traceparent(trace_id: str, span_id: str, sampled: bool = True) -> str:
    """The `traceparent` header value that makes `span_id` the parent of the callee's spans."""
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"
