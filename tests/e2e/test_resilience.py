"""Provider hiccups: retries with backoff and Retry-After, fallbacks, load balancing, timeouts,
disconnects; what the client finally sees and what the trace says was tried."""

from __future__ import annotations

import collections
import time

import openai
import pytest

from keel.testing import Behavior, FakeUpstream, Fault
from tests.e2e.conftest import KeelFactory, RunningKeel

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]


def _config(fake: FakeUpstream, *, timeout_s: float = 2, attempts: int = 3) -> str:
    return f"""
models:
  fast:
    deployments:
      - provider: openai
        model: gpt-4o-mini
        api_base: {fake.url}/v1
        api_key: env:FAKE_KEY
        timeout_s: {timeout_s}
    fallbacks: [claude]
  claude:
    deployments:
      - provider: anthropic
        model: claude-sonnet-4-5
        api_base: {fake.url}
        api_key: env:FAKE_KEY
        timeout_s: {timeout_s}
  solo:
    deployments:
      - provider: openai
        model: gpt-4o-mini
        api_base: {fake.url}/v1
        api_key: env:FAKE_KEY
        timeout_s: {timeout_s}
retries: {{max_attempts: {attempts}, backoff_s: 0.01, max_backoff_s: 1}}
"""


def test_429_is_retried_after_the_upstreams_retry_after(
    keel: RunningKeel, fake: FakeUpstream
) -> None:
    fake.enqueue(Fault.status(429, retry_after=0.3))
    started = time.monotonic()
    reply = keel.client().chat.completions.create(model="fast", messages=HI)
    assert reply.choices[0].message.content == "Echo: hi"
    assert time.monotonic() - started >= 0.3
    assert fake.request_count == 2
    [span] = keel.spans()
    assert [a.status for a in span.attempts] == [429, 200]
    assert span.attempts[0].retry_after_s == pytest.approx(0.3)
    assert span.attempts[0].outcome.startswith("HTTP 429")


def test_5xx_connection_reset_and_malformed_answers_are_retried(
    keel: RunningKeel, fake: FakeUpstream
) -> None:
    fake.enqueue(Fault.status(503), Fault.reset(), path=CHAT)
    reply = keel.client().chat.completions.create(model="fast", messages=HI)
    assert reply.choices[0].message.content == "Echo: hi"
    fake.enqueue(Fault.malformed(), path=CHAT)
    keel.client().chat.completions.create(model="fast", messages=HI)
    first, second = sorted(keel.spans(2), key=lambda s: s.start_time)
    assert [a.outcome.split(":")[0] for a in first.attempts] == ["HTTP 503", "connection", "ok"]
    assert [a.outcome.split(":")[0] for a in second.attempts] == ["malformed", "ok"]
    assert first.status == second.status == "ok"


def test_fallback_alias_answers_when_every_attempt_failed(
    keel_factory: KeelFactory, fake: FakeUpstream
) -> None:
    running = keel_factory(_config(fake))
    fake.enqueue(Fault.status(500), Fault.status(502), Fault.reset(), path=CHAT)
    reply = running.client().chat.completions.create(model="fast", messages=HI)
    assert reply.choices[0].message.content == "Echo: hi"
    assert fake.requests[-1].path == "/v1/messages"  # Claude, through the Anthropic dialect
    [span] = running.spans()
    assert span.status == "ok" and span.alias == "fast"
    assert (span.deployment, span.provider, span.model) == ("claude[0]", "anthropic", reply.model)
    assert [a.deployment for a in span.attempts] == ["fast[0]"] * 3 + ["claude[0]"]


def test_everything_failing_gives_an_openai_error_saying_what_was_tried(
    keel_factory: KeelFactory, fake: FakeUpstream
) -> None:
    running = keel_factory(_config(fake, attempts=2))
    for _ in range(2):
        fake.enqueue(Fault.status(500, message="upstream overloaded"), path=CHAT)
    for _ in range(2):
        fake.enqueue(Fault.status(529, error_type="overloaded_error"), path="/v1/messages")
    with pytest.raises(openai.APIStatusError) as caught:
        running.client().chat.completions.create(model="fast", messages=HI)
    error = caught.value
    assert error.status_code == 502
    message = error.body["message"]  # type: ignore[index]
    assert "All 4 attempts for model 'fast' failed" in message
    assert "fast[0] openai/gpt-4o-mini: HTTP 500: upstream overloaded (x2)" in message
    assert "claude[0] anthropic/claude-sonnet-4-5: HTTP 529" in message
    [span] = running.spans()
    assert span.status == "error" and span.status_code == 502 and len(span.attempts) == 4
    assert span.error == message


def test_rate_limited_everywhere_is_a_429_for_the_client(
    keel_factory: KeelFactory, fake: FakeUpstream
) -> None:
    running = keel_factory(_config(fake, attempts=1))
    fake.enqueue(Fault.status(429), path=CHAT)
    fake.enqueue(Fault.status(429, error_type="rate_limit_error"), path="/v1/messages")
    with pytest.raises(openai.RateLimitError):
        running.client().chat.completions.create(model="fast", messages=HI)


def test_timeouts_are_retried_and_a_final_timeout_is_a_504(
    keel_factory: KeelFactory, fake: FakeUpstream
) -> None:
    running = keel_factory(_config(fake, timeout_s=0.3, attempts=2))
    fake.enqueue(Fault.hang(), path=CHAT)
    reply = running.client().chat.completions.create(model="solo", messages=HI)
    assert reply.choices[0].message.content == "Echo: hi"
    fake.enqueue(Fault.hang(), Fault.hang(), path=CHAT)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        running.client().chat.completions.create(model="solo", messages=HI)
    assert caught.value.status_code == 504
    assert time.monotonic() - started < 2.0  # the per-deployment timeout held
    first, second = sorted(running.spans(2), key=lambda s: s.start_time)
    assert first.attempts[0].outcome.startswith("timeout")
    assert [a.outcome.split(":")[0] for a in second.attempts] == ["timeout", "timeout"]


def test_request_errors_go_back_to_the_client_without_retry_or_fallback(
    keel_factory: KeelFactory, fake: FakeUpstream
) -> None:
    running = keel_factory(_config(fake))
    fake.enqueue(Fault.status(400, message="max_tokens is too large"), path=CHAT)
    with pytest.raises(openai.BadRequestError) as caught:
        running.client().chat.completions.create(model="fast", messages=HI)
    assert "max_tokens is too large" in caught.value.message
    assert caught.value.code == "upstream_rejected"  # the upstream gave no code
    assert fake.request_count == 1
    # The upstream's own type, code and param reach the client, which may act on them.
    too_long = Fault.status(
        400, message="too many tokens", code="context_length_exceeded", param="messages"
    )
    fake.enqueue(too_long, path=CHAT)
    with pytest.raises(openai.BadRequestError) as caught:
        running.client().chat.completions.create(model="fast", messages=HI)
    assert (caught.value.code, caught.value.param) == ("context_length_exceeded", "messages")
    assert caught.value.type == "invalid_request_error"
    assert fake.request_count == 2


def test_401_from_a_deployment_moves_on_to_the_next_at_once(
    keel_factory: KeelFactory, fake: FakeUpstream
) -> None:
    running = keel_factory(_config(fake))
    fake.enqueue(Fault.status(401), path=CHAT)
    running.client().chat.completions.create(model="fast", messages=HI)
    assert [r.path for r in fake.requests] == [CHAT, "/v1/messages"]


def test_deployment_without_its_key_is_skipped_and_says_so(
    keel_factory: KeelFactory, fake: FakeUpstream
) -> None:
    config = _config(fake).replace(
        "api_key: env:FAKE_KEY\n        timeout_s: 2\n    fallbacks",
        "api_key: env:NOT_SET_KEY\n        timeout_s: 2\n    fallbacks",
    )
    running = keel_factory(config)
    running.client().chat.completions.create(model="fast", messages=HI)
    [span] = running.spans()
    assert span.attempts[0].outcome == "skipped: NOT_SET_KEY is not set"
    assert span.deployment == "claude[0]"


def test_weighted_load_balancing_follows_weights(
    keel_factory: KeelFactory, fake: FakeUpstream
) -> None:
    config = f"""
models:
  mix:
    deployments:
      - {{provider: openai, model: model-a, api_base: "{fake.url}/v1", api_key: env:FAKE_KEY,
          weight: 3}}
      - {{provider: openai, model: model-b, api_base: "{fake.url}/v1", api_key: env:FAKE_KEY,
          weight: 1}}
"""
    running = keel_factory(config)
    client = running.client()
    for _ in range(400):
        client.chat.completions.create(model="mix", messages=HI)  # type: ignore[arg-type]
    counts = collections.Counter(r.json["model"] for r in fake.requests)
    # 75% expected; +-3.2 standard deviations of a binomial(400, 0.75)
    assert 0.68 <= counts["model-a"] / 400 <= 0.82, counts


def test_stream_is_retried_until_its_first_chunk(keel: RunningKeel, fake: FakeUpstream) -> None:
    fake.enqueue(Fault.status(500), Fault.malformed(), path=CHAT)
    chunks = list(keel.client().chat.completions.create(model="fast", messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: hi"
    [span] = keel.spans()
    assert span.status == "ok" and len(span.attempts) == 3


@pytest.mark.parametrize("fault", [Fault.truncate_stream(after_chunks=2), Fault.stream_error(2)])
def test_stream_failing_after_start_ends_with_an_error_event(
    keel: RunningKeel, fake: FakeUpstream, fault: Fault
) -> None:
    fake.default = Behavior(reply="a b c d e f g h", chunks=8)
    fake.enqueue(fault, path=CHAT)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in keel.client().chat.completions.create(model="fast", messages=HI, stream=True):
            received.append(chunk)
    assert received  # the client got the start of the answer before the error
    [span] = keel.spans()
    assert span.status == "error" and span.error is not None
    assert "stream broken after start" in span.error
    assert fake.request_count == 1  # a started stream is never replayed


def test_client_disconnect_cancels_the_upstream_call(keel: RunningKeel, fake: FakeUpstream) -> None:
    fake.enqueue(Fault.delay(5), path=CHAT)
    with pytest.raises(openai.APITimeoutError):
        keel.client(timeout=0.3).chat.completions.create(model="fast", messages=HI)
    deadline = time.monotonic() + 3
    while fake.cancelled < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.cancelled == 1
    [span] = keel.spans()
    assert span.status_code == 499 and span.error == "client disconnected"


def test_client_leaving_a_stream_cancels_the_upstream_stream(
    keel: RunningKeel, fake: FakeUpstream
) -> None:
    fake.default = Behavior(reply="a b c d e f g h i j", chunks=10, chunk_delay_s=0.2)
    stream = keel.client().chat.completions.create(model="fast", messages=HI, stream=True)
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 3
    while fake.cancelled < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.cancelled == 1
    [span] = keel.spans()
    assert span.status_code == 499 and span.stream


def test_upstream_without_usage_gets_estimated_tokens(
    keel: RunningKeel, fake: FakeUpstream
) -> None:
    fake.default = Behavior(reply="hello world", reports_usage=False)
    client = keel.client()
    client.chat.completions.create(model="fast", messages=HI)
    list(client.chat.completions.create(model="fast", messages=HI, stream=True))
    spans = keel.spans(2)
    assert len(spans) == 2
    for span in spans:
        assert span.usage is not None and span.usage.estimated
        # "hello world" is 2 tokens; the prompt is framing + "user" + "hi"
        assert span.usage.output_tokens == 2
        assert span.usage.input_tokens == 3 + 3 + 1 + 1
        assert span.cost_usd is not None and span.cost_usd > 0
