"""`auth.master_key`: /v1 needs `Authorization: Bearer <key>`; /health stays open."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest

from keel.core.errors import ConfigError
from keel.testing import FakeUpstream
from tests.e2e.conftest import KeelFactory, RunningKeel, fake_config

MASTER = "sk-master"
USER: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
def guarded(keel_factory: KeelFactory, fake: FakeUpstream) -> RunningKeel:
    """Keel with `auth: {master_key: env:KEEL_MASTER_KEY}` and the variable set."""
    return keel_factory(
        fake_config(fake, auth="{master_key: env:KEEL_MASTER_KEY}"),
        env={"KEEL_MASTER_KEY": MASTER},
    )


def assert_unauthorized(response: httpx2.Response) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    assert "Authorization: Bearer" in error["message"]


def requests_to_every_route(url: str, headers: dict[str, str]) -> list[httpx2.Response]:
    return [
        httpx2.post(
            url + "/v1/chat/completions",
            json={"model": "fast", "messages": USER},
            headers=headers,
            timeout=10,
        ),
        httpx2.post(
            url + "/v1/chat/completions",
            json={"model": "fast", "messages": USER, "stream": True},
            headers=headers,
            timeout=10,
        ),
        httpx2.post(
            url + "/v1/embeddings",
            json={"model": "embed", "input": "x"},
            headers=headers,
            timeout=10,
        ),
        httpx2.get(url + "/v1/models", headers=headers, timeout=10),
        httpx2.get(url + "/models", headers=headers, timeout=10),
    ]


BAD_CREDENTIALS: list[dict[str, str]] = [
    {},
    {"authorization": "Bearer sk-wrong"},
    {"authorization": "Bearer sk-mas"},  # a prefix of the key
    {"authorization": f"Bearer {MASTER}x"},
    {"authorization": "Bearer"},
    {"authorization": MASTER},  # no scheme
    {"authorization": f"Basic {MASTER}"},
    {"x-api-key": MASTER},  # Anthropic style is not accepted
]


def test_missing_or_wrong_key_is_401_everywhere_and_reaches_nothing(
    guarded: RunningKeel, fake: FakeUpstream
) -> None:
    for headers in BAD_CREDENTIALS:
        for response in requests_to_every_route(guarded.url, headers):
            assert_unauthorized(response)
    assert fake.request_count == 0
    assert guarded.spans(expected=1, timeout_s=0.2) == []


def test_openai_client_with_wrong_key_raises_authentication_error(
    guarded: RunningKeel, fake: FakeUpstream
) -> None:
    client = guarded.client(api_key="sk-wrong")
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="fast", messages=USER)
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client.embeddings.create(model="embed", input="x")
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    assert fake.request_count == 0


def test_auth_is_checked_before_the_body(guarded: RunningKeel) -> None:
    """Without the key a client learns nothing, not even that its body was malformed."""
    for body in (b"{not json", b"x" * 100_000):
        response = httpx2.post(guarded.url + "/v1/chat/completions", content=body, timeout=10)
        assert_unauthorized(response)


def test_right_key_works_for_chat_embeddings_and_models(
    guarded: RunningKeel, fake: FakeUpstream
) -> None:
    client = guarded.client(api_key=MASTER)
    reply = client.chat.completions.create(model="fast", messages=USER)
    assert reply.choices[0].message.content == "Echo: hi"
    chunks = list(client.chat.completions.create(model="fast", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: hi"
    assert len(client.embeddings.create(model="embed", input="x").data) == 1
    assert sorted(m.id for m in client.models.list()) == ["claude", "embed", "fast"]
    # The scheme is case-insensitive, as HTTP says.
    raw = httpx2.get(guarded.url + "/v1/models", headers={"authorization": f"bearer {MASTER}"})
    assert raw.status_code == 200
    # The gateway's key is not the upstream's: Keel sends the deployment's own key.
    assert {r.headers["authorization"] for r in fake.requests} == {"Bearer sk-fake"}
    assert len(guarded.spans(expected=3)) == 3


def test_health_stays_open_with_a_master_key(guarded: RunningKeel) -> None:
    response = httpx2.get(guarded.url + "/health", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_without_master_key_any_key_or_none_works(keel: RunningKeel, fake: FakeUpstream) -> None:
    for key in ("anything", "sk-master", "x"):
        reply = keel.client(api_key=key).chat.completions.create(model="fast", messages=USER)
        assert reply.choices[0].message.content == "Echo: hi"
    response = httpx2.get(keel.url + "/v1/models", timeout=10)  # no Authorization at all
    assert response.status_code == 200
    assert fake.request_count == 3


def test_master_key_variable_not_set_fails_at_start(
    keel_factory: KeelFactory, fake: FakeUpstream
) -> None:
    with pytest.raises(ConfigError) as caught:
        keel_factory(fake_config(fake, auth="{master_key: env:KEEL_MASTER_KEY}"))
    message = str(caught.value)
    assert "auth.master_key" in message and "KEEL_MASTER_KEY" in message
    assert "not set" in message and "export KEEL_MASTER_KEY" in message
