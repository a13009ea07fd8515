"""Reading token usage from OpenAI-shaped responses."""

from __future__ import annotations

from typing import Any

import pytest

from keel.core.usage import Usage, usage_from_openai


def test_chat_usage_reads_prompt_completion_cached_and_reasoning_tokens() -> None:
    usage = usage_from_openai(
        {
            "prompt_tokens": 1_200,
            "completion_tokens": 300,
            "total_tokens": 1_500,
            "prompt_tokens_details": {"cached_tokens": 1_024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 192, "audio_tokens": 0},
        }
    )
    assert usage == Usage(
        input_tokens=1_200,
        output_tokens=300,
        cache_read_tokens=1_024,
        cache_write_tokens=0,
        reasoning_tokens=192,
        estimated=False,
    )
    assert usage.total_tokens == 1_500


def test_embeddings_usage_is_input_only() -> None:
    usage = usage_from_openai({"prompt_tokens": 8, "total_tokens": 8})
    assert usage == Usage(input_tokens=8)
    assert usage.total_tokens == 8


@pytest.mark.parametrize("raw", [None, "12", 12, ["prompt_tokens", 12]])
def test_absent_or_non_object_usage_is_none(raw: object) -> None:
    assert usage_from_openai(raw) is None


def test_usage_without_counts_is_no_usage() -> None:
    # An empty object reports nothing: the gateway must estimate, not record $0.
    assert usage_from_openai({}) is None


def test_missing_fields_read_as_zero() -> None:
    assert usage_from_openai({"completion_tokens": 5}) == Usage(output_tokens=5)


@pytest.mark.parametrize("garbage", [None, "12", -3, 1.5, True, {"n": 12}])
def test_garbage_counts_read_as_zero(garbage: Any) -> None:
    usage = usage_from_openai(
        {
            "prompt_tokens": garbage,
            "completion_tokens": garbage,
            "prompt_tokens_details": {"cached_tokens": garbage},
            "completion_tokens_details": {"reasoning_tokens": garbage},
        }
    )
    assert usage == Usage()


@pytest.mark.parametrize("details", [None, "cached", 7, [1, 2]])
def test_garbage_detail_objects_read_as_zero(details: Any) -> None:
    usage = usage_from_openai(
        {
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "prompt_tokens_details": details,
            "completion_tokens_details": details,
        }
    )
    assert usage == Usage(input_tokens=10, output_tokens=4)


def test_total_tokens_is_input_plus_output_not_double_counting_cache_or_reasoning() -> None:
    usage = Usage(
        input_tokens=1_000,
        output_tokens=200,
        cache_read_tokens=600,
        cache_write_tokens=100,
        reasoning_tokens=150,
    )
    assert usage.total_tokens == 1_200


def test_as_dict_is_flat_and_complete() -> None:
    usage = Usage(input_tokens=3, output_tokens=2, reasoning_tokens=1, estimated=True)
    assert usage.as_dict() == {
        "input_tokens": 3,
        "output_tokens": 2,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 1,
        "estimated": True,
    }
