"""Malformed requests get an OpenAI error object that says what is wrong; none reaches upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from keel.testing import FakeUpstream
from tests.e2e.conftest import KeelFactory, RunningKeel, fake_config

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
USER: Any = [{"role": "user", "content": "hi"}]


def post(keel: RunningKeel, path: str, **kwargs: Any) -> httpx2.Response:
    return httpx2.post(keel.url + path, timeout=10, **kwargs)


def error_of(response: httpx2.Response, status: int) -> dict[str, Any]:
    """The OpenAI error object of `response`, checked for shape and status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    return error


# (raw or JSON body, the param the error names, words in its message)
BAD_CHAT_BODIES: list[tuple[Any, str | None, str]] = [
    (b"{not json", None, "not valid JSON"),
    (b"", None, "not valid JSON"),
    (b"[]", None, "must be a JSON object"),
    (b'"hello"', None, "must be a JSON object"),
    ({"messages": USER}, "model", "Missing required parameter: 'model'"),
    ({"model": "fast"}, "messages", "Missing required parameter: 'messages'"),
    ({"model": "fast", "messages": []}, "messages", "non-empty array"),
    ({"model": "fast", "messages": "hi"}, "messages", "array"),
    ({"model": "fast", "messages": [{"content": "hi"}]}, "messages[0].role", "role is required"),
    ({"model": "fast", "messages": USER, "temperature": "hot"}, "temperature", "number"),
    ({"model": "fast", "messages": USER, "max_tokens": 1.5}, "max_tokens", "integer"),
    ({"model": "fast", "messages": USER, "stream": "yes"}, "stream", "boolean"),
    ({"model": "fast", "messages": USER, "n": True}, "n", "integer"),
]


def test_bad_chat_bodies_are_400_error_objects_naming_the_field(
    keel: RunningKeel, fake: FakeUpstream
) -> None:
    for body, param, words in BAD_CHAT_BODIES:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = post(keel, CHAT, content=content, headers={"content-type": "application/json"})
        error = error_of(response, 400)
        assert error["type"] == "invalid_request_error", body
        assert error["param"] == param, body
        assert words in error["message"], (body, error["message"])
    assert fake.request_count == 0


def test_invalid_utf8_and_lone_surrogates_are_400(keel: RunningKeel, fake: FakeUpstream) -> None:
    for content, words in [
        (b'{"model": "fast", "messages": [{"role": "user", "content": "caf\xe9"}]}', "UTF-8"),
        (b'{"model": "fast", "messages": [{"role": "user", "content": "a\\ud800b"}]}', "surrogate"),
    ]:
        error = error_of(post(keel, CHAT, content=content), 400)
        assert words in error["message"] and error["code"] == "invalid_json", error
    assert fake.request_count == 0


def test_openai_client_sees_bad_requests_as_its_own_errors(
    keel: RunningKeel, fake: FakeUpstream
) -> None:
    client = keel.client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="fast", messages=[])
    assert caught.value.status_code == 400 and caught.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="fast", messages=USER, extra_body={"temperature": "hot"}
        )
    assert caught.value.param == "temperature"
    assert "'temperature' must be a number" in caught.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-5-turbo", messages=USER)
    assert missing.value.code == "model_not_found" and missing.value.param == "model"
    assert fake.request_count == 0


def test_unknown_alias_is_404_listing_known_models(keel: RunningKeel, fake: FakeUpstream) -> None:
    for path, body in [
        (CHAT, {"model": "fsat", "messages": USER}),
        (EMBEDDINGS, {"model": "fsat", "input": "x"}),
    ]:
        error = error_of(post(keel, path, json=body), 404)
        assert error["code"] == "model_not_found" and error["param"] == "model"
        assert "'fsat'" in error["message"]
        assert "Known models: claude, embed, fast" in error["message"]
    assert fake.request_count == 0
    assert keel.spans(expected=1, timeout_s=0.3) == []


def test_bad_embeddings_bodies_are_400(keel: RunningKeel, fake: FakeUpstream) -> None:
    for body, param, words in [
        ({"model": "embed"}, "input", "Missing required parameter: 'input'"),
        ({"model": "embed", "input": []}, "input", "non-empty array"),
        ({"model": "embed", "input": 7}, "input", "string or a non-empty array"),
        ({"input": "x"}, "model", "'model'"),
        ([], None, "must be a JSON object"),
    ]:
        error = error_of(post(keel, EMBEDDINGS, json=body), 400)
        assert error["param"] == param and words in error["message"], (body, error)
    assert fake.request_count == 0


@pytest.fixture
def small_keel(keel_factory: KeelFactory, fake: FakeUpstream) -> RunningKeel:
    """Keel with a 0.01 MB (10485 byte) body limit."""
    return keel_factory(fake_config(fake, server="{max_body_mb: 0.01}"))


def _big_body() -> bytes:
    return json.dumps(
        {"model": "fast", "messages": [{"role": "user", "content": "x" * 20_000}]}
    ).encode()


def test_body_over_the_limit_is_413(small_keel: RunningKeel, fake: FakeUpstream) -> None:
    body = _big_body()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    for content in (body, chunks()):
        error = error_of(post(small_keel, CHAT, content=content), 413)
        assert error["code"] == "request_too_large"
        assert "server.max_body_mb" in error["message"]
    assert fake.request_count == 0
    # Under the limit still works on the same gateway.
    ok = post(small_keel, CHAT, json={"model": "fast", "messages": USER})
    assert ok.status_code == 200 and fake.request_count == 1


def test_413_message_states_the_configured_limit(small_keel: RunningKeel) -> None:
    error = error_of(post(small_keel, CHAT, content=_big_body()), 413)
    assert "0 MB" not in error["message"]
    assert "0.01 MB" in error["message"]


@pytest.mark.parametrize("alias", ["fast", "claude"])
def test_nul_in_content_is_passed_upstream_and_stored_as_visible_symbol(
    keel: RunningKeel, fake: FakeUpstream, alias: str
) -> None:
    reply = keel.client().chat.completions.create(
        model=alias, messages=[{"role": "user", "content": "a\u0000b"}]
    )
    assert reply.choices[0].message.content == "Echo: a\u0000b"
    assert fake.requests[-1].json["messages"][-1]["content"] == "a\u0000b"
    [span] = keel.spans()
    assert span.status == "ok"
    assert span.input == [{"role": "user", "content": "a\u2400b"}]
    assert span.output[0]["message"]["content"] == "Echo: a\u2400b"


def test_bad_request_does_not_disturb_the_next_good_one(
    keel: RunningKeel, fake: FakeUpstream
) -> None:
    for content in (b"{", b"[]", b'{"model": "fast", "messages": []}', b"\xff\xfe"):
        assert post(keel, CHAT, content=content).status_code == 400
    client = keel.client()
    reply = client.chat.completions.create(
        model="fast", messages=USER, extra_headers={"x-keel-user": "after-bad"}
    )
    assert reply.choices[0].message.content == "Echo: hi"
    assert fake.request_count == 1
    [span] = keel.spans()
    assert span.user_id == "after-bad" and span.status == "ok"
    assert span.input == USER


def test_metadata_header_that_is_not_a_json_object_is_400(
    keel: RunningKeel, fake: FakeUpstream
) -> None:
    for metadata in ["[1, 2]", "not json", '"text"', "42", "{"]:
        response = post(
            keel,
            CHAT,
            json={"model": "fast", "messages": USER},
            headers={"x-keel-metadata": metadata},
        )
        error = error_of(response, 400)
        assert error["param"] == "x-keel-metadata" and "JSON object" in error["message"]
    assert fake.request_count == 0


def test_wrong_method_is_405_and_unknown_path_404(keel: RunningKeel, fake: FakeUpstream) -> None:
    error = error_of(httpx2.get(keel.url + CHAT, timeout=10), 405)
    assert "GET" in error["message"] and CHAT in error["message"]
    for method, path in [("GET", "/v1/nope"), ("POST", "/v1/completions"), ("GET", "/")]:
        error = error_of(httpx2.request(method, keel.url + path, timeout=10), 404)
        assert error["code"] == "not_found" and path in error["message"]
    assert fake.request_count == 0


def test_wrong_method_says_which_methods_are_allowed(keel: RunningKeel) -> None:
    response = httpx2.get(keel.url + CHAT, timeout=10)
    assert response.status_code == 405
    assert response.headers.get("allow") == "POST"
