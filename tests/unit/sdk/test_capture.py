"""Captured inputs and outputs: the size limit and the mask hook."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest

import keel
from keel.sdk import Client
from keel.sdk.capture import truncate
from tests.unit.sdk.collector import Collector
from tests.unit.sdk.conftest import Configure


@keel.observe
def echo(text: Any) -> Any:
    return text


def test_a_long_value_is_cut_to_the_limit_with_a_note(
    configure: Configure, collector: Collector
) -> None:
    configure(max_field_bytes=200)
    long_text = "é" * 1000  # 2 bytes each in UTF-8
    assert echo(long_text) == long_text
    echo("short")
    assert keel.flush(5)

    long_span, short_span = collector.spans()
    for key in ("keel.input", "keel.output"):
        text = long_span.attributes[key]
        assert len(text.encode()) <= 200
        value = json.loads(text)
        assert isinstance(value, str)
        match = re.fullmatch(r"(.*)…\[truncated (\d+) bytes\]", value, re.DOTALL)
        assert match is not None
        head, left_out = match.group(1), int(match.group(2))
        original = json.dumps(
            {"text": long_text} if key == "keel.input" else long_text,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        assert original.startswith(head)
        assert len(head.encode()) + left_out == len(original.encode())
    assert short_span.json("keel.input") == {"text": "short"}
    assert short_span.json("keel.output") == "short"


@pytest.mark.parametrize("text", ['"' * 500, "\n" * 500, "a" * 500, "😀" * 500])
def test_truncation_fits_the_limit_whatever_the_escaping(text: str) -> None:
    original = json.dumps(text, ensure_ascii=False)
    cut = truncate(original, 100)
    assert len(cut.encode()) <= 100
    assert json.loads(cut).endswith(" bytes]")


def test_the_mask_hook_sees_inputs_and_outputs_before_they_leave(
    configure: Configure, collector: Collector
) -> None:
    def mask(data: Any) -> Any:
        return json.loads(json.dumps(data).replace("4111-1111", "[card]"))

    configure(mask=mask)
    echo("pay with 4111-1111")
    with keel.span("block", input={"card": "4111-1111"}) as span:
        span.update(output="4111-1111 charged")
    assert keel.flush(5)

    spans = {s.name: s for s in collector.spans()}
    assert spans["echo"].json("keel.input") == {"text": "pay with [card]"}
    assert spans["echo"].json("keel.output") == "pay with [card]"
    assert spans["block"].json("keel.input") == {"card": "[card]"}
    assert spans["block"].json("keel.output") == "[card] charged"


def test_a_failing_mask_withholds_the_value_and_the_call_goes_on(
    configure: Configure, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    def mask(data: Any) -> Any:
        raise RuntimeError("mask bug")

    configure(mask=mask)
    with caplog.at_level(logging.WARNING, logger="keel.sdk"):
        assert echo("secret") == "secret"
        assert echo("secret") == "secret"
    assert keel.flush(5)
    for span in collector.spans():
        assert "secret" not in json.dumps(span.raw)
        assert span.json("keel.input") == "<withheld: the mask hook failed>"
    warnings = [r for r in caplog.records if "mask hook" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited


def test_values_are_recorded_as_they_were_at_the_call_not_after_later_changes(
    sdk: Client, collector: Collector
) -> None:
    @keel.observe
    def plan(messages: list[str], note: str) -> dict[str, list[str]]:
        return {"steps": list(messages)}

    messages = ["hi"]
    result = plan(messages, "first")
    messages.append("changed after the call")
    result["steps"].append("changed after the return")
    assert keel.flush(5)
    span = collector.span("plan")
    assert span.json("keel.input") == {"messages": ["hi"], "note": "first"}
    assert span.json("keel.output") == {"steps": ["hi"]}
