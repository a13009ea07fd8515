"""Anthropic SSE transcripts in, OpenAI chunk frames out (the pure stream state machine)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from keel.core.errors import UpstreamError
from keel.core.usage import Usage
from keel.providers.anthropic_stream import DONE, SSEParser, StreamTranslator
from keel.providers.anthropic_translate import JSON_TOOL_NAME
from tests.unit.providers.transcripts import TEXT_TRANSCRIPT, TOOL_TRANSCRIPT


def run(
    transcript: bytes, *, include_usage: bool = False, json_tool: str | None = None
) -> tuple[list[bytes], StreamTranslator]:
    parser = SSEParser()
    translator = StreamTranslator(
        "claude-default", created=1700000000, include_usage=include_usage, json_tool=json_tool
    )
    frames: list[bytes] = []
    for line in transcript.splitlines(keepends=True):
        event = parser.feed(line)
        if event is not None:
            frames.extend(translator.feed(*event))
    event = parser.flush()
    if event is not None:
        frames.extend(translator.feed(*event))
    return frames, translator


def chunks(frames: list[bytes]) -> list[dict[str, Any]]:
    """The JSON documents of every frame but [DONE], checking the SSE framing on the way."""
    docs = []
    for frame in frames:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        if frame != DONE:
            docs.append(orjson.loads(frame[6:]))
    return docs


def deltas(frames: list[bytes]) -> list[tuple[dict[str, Any], str | None]]:
    return [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks(frames)]


def test_text_stream_becomes_openai_chunks() -> None:
    frames, translator = run(TEXT_TRANSCRIPT)
    assert frames[-1] == DONE
    docs = chunks(frames)
    assert {(d["id"], d["object"], d["created"], d["model"]) for d in docs} == {
        (
            "msg_01XFDUDYJgAACzvnptvVoYEL",
            "chat.completion.chunk",
            1700000000,
            "claude-sonnet-4-5-20250929",
        )
    }
    assert deltas(frames) == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hello"}, None),
        ({"content": " world"}, None),
        ({}, "stop"),
    ]
    assert translator.finished and translator.saw_token
    assert translator.model == "claude-sonnet-4-5-20250929"
    assert translator.output() == {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello world"},
                "finish_reason": "stop",
            }
        ]
    }
    assert translator.usage() == Usage(
        input_tokens=135, output_tokens=15, cache_read_tokens=100, cache_write_tokens=10
    )


def test_final_usage_chunk_only_when_the_client_asked() -> None:
    without, _ = run(TEXT_TRANSCRIPT)
    assert all(b'"usage"' not in frame for frame in without)

    frames, _ = run(TEXT_TRANSCRIPT, include_usage=True)
    assert frames[-1] == DONE
    last = chunks(frames)[-1]
    assert last["choices"] == []
    assert last["usage"] == {
        "prompt_tokens": 135,
        "completion_tokens": 15,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    assert len(frames) == len(without) + 1


def test_tool_call_stream_becomes_tool_call_deltas() -> None:
    frames, translator = run(TOOL_TRANSCRIPT)
    call_id = "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert deltas(frames) == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Let me check."}, None),
        (
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            },
            None,
        ),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '{"location":'}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": ' "San Francisco, CA"}'}}]}, None),
        ({}, "tool_calls"),
    ]
    [choice] = translator.output()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "arguments": '{"location": "San Francisco, CA"}',
                },
            }
        ],
    }
    assert translator.usage() == Usage(input_tokens=472, output_tokens=89)


def test_second_tool_call_gets_the_next_index() -> None:
    second = (
        b'event: content_block_start\ndata: {"type":"content_block_start","index":2,'
        b'"content_block":{"type":"tool_use","id":"toolu_2","name":"get_time","input":{}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":2,'
        b'"delta":{"type":"input_json_delta","partial_json":"{}"}}\n\n'
    )
    head, _, tail = TOOL_TRANSCRIPT.partition(b"event: message_delta")
    frames, translator = run(head + second + b"event: message_delta" + tail)
    calls = translator.output()["choices"][0]["message"]["tool_calls"]
    assert [(c["id"], c["function"]["arguments"]) for c in calls] == [
        ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", '{"location": "San Francisco, CA"}'),
        ("toolu_2", "{}"),
    ]
    assert deltas(frames)[-2][0]["tool_calls"][0] == {"index": 1, "function": {"arguments": "{}"}}


def test_forced_json_tool_streams_as_content() -> None:
    transcript = TOOL_TRANSCRIPT.replace(b'"get_weather"', b'"' + JSON_TOOL_NAME.encode() + b'"')
    frames, translator = run(transcript, json_tool=JSON_TOOL_NAME)
    assert all(b"tool_calls" not in frame for frame in frames)
    [choice] = translator.output()["choices"]
    assert choice == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": 'Let me check.{"location": "San Francisco, CA"}',
        },
        "finish_reason": "stop",
    }


def test_thinking_blocks_are_left_out() -> None:
    thinking = (
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"thinking","thinking":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"thinking_delta","thinking":"Let me think"}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"signature_delta","signature":"EqQB"}}\n\n'
    )
    head, _, tail = TEXT_TRANSCRIPT.partition(b"event: content_block_start")
    tail = tail.replace(b'"index":0', b'"index":1')
    frames, translator = run(head + thinking + b"event: content_block_start" + tail)
    assert all(b"think" not in frame for frame in frames)
    assert translator.output()["choices"][0]["message"]["content"] == "Hello world"


def test_usage_reported_only_on_message_delta_is_taken() -> None:
    # Some Anthropic-compatible servers send 0 input tokens at the start, the count at the end.
    transcript = TEXT_TRANSCRIPT.replace(b'"input_tokens":25', b'"input_tokens":0').replace(
        b'"usage":{"output_tokens":15}', b'"usage":{"input_tokens":30,"output_tokens":15}'
    )
    _, translator = run(transcript)
    usage = translator.usage()
    assert usage is not None and usage.input_tokens == 140


def test_error_event_mid_stream_raises_upstream_error() -> None:
    head, _, _ = TEXT_TRANSCRIPT.partition(b"event: content_block_stop")
    error = (
        b"event: error\n"
        b'data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    with pytest.raises(UpstreamError) as info:
        run(head + error)
    assert (info.value.kind, info.value.status, info.value.message) == ("http", 529, "Overloaded")
    assert info.value.retryable


def test_truncated_stream_does_not_finish_but_keeps_what_arrived() -> None:
    head, _, _ = TEXT_TRANSCRIPT.partition(b"event: content_block_stop")
    frames, translator = run(head)
    assert not translator.finished
    assert DONE not in frames
    assert translator.output()["choices"][0]["message"]["content"] == "Hello world"
    usage = translator.usage()
    assert usage is not None and usage.input_tokens == 135


def test_event_that_is_not_json_is_malformed() -> None:
    with pytest.raises(UpstreamError) as info:
        run(b"event: message_start\ndata: {not json\n\n")
    assert info.value.kind == "malformed"


@pytest.mark.parametrize(
    "transcript",
    [
        b'event: ping\ndata: {"type":"ping"}\n\n',
        b'event: ping\r\ndata:{"type":"ping"}\r\n\r\n',
        b': keep-alive comment\nevent: ping\ndata: {"type":"ping"}\n',  # no final blank line
        b'data: {"type":\ndata: "ping"}\n\n',  # one event split over two data lines
    ],
)
def test_sse_parser_variants(transcript: bytes) -> None:
    parser = SSEParser()
    events = [e for line in transcript.splitlines(keepends=True) if (e := parser.feed(line))]
    if (last := parser.flush()) is not None:
        events.append(last)
    assert len(events) == 1
    assert orjson.loads(events[0][1]) == {"type": "ping"}


def test_event_type_falls_back_to_the_event_line() -> None:
    translator = StreamTranslator("m", created=0, include_usage=False)
    assert translator.feed("message_stop", b"{}") == (DONE,)
    assert translator.finished
