"""The gateway pipeline: route a call across deployments with retries and fallbacks, record it.

Order of attempts: the alias's deployments in weighted order, each tried up to
`RetryPolicy.max_attempts` times on retryable failures (429, 5xx, timeouts,
connection errors, malformed answers) with backoff, then the fallback
aliases. A 401/403/404 from a deployment moves on to the next deployment at
once; any other 4xx is the request's fault and goes straight back to the client.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson

from keel.core.deployments import RetryPolicy
from keel.core.errors import GatewayError, UpstreamError
from keel.core.retry import backoff_delay
from keel.core.spans import Attempt
from keel.gateway.call import Call
from keel.gateway.recorder import Recorder
from keel.gateway.router import Router, Target
from keel.ports import ChatStream, Provider

T = TypeVar("T")
_MOVE_ON = frozenset((401, 403, 404))
CLIENT_CLOSED = 499  # nginx's convention for "client went away before the answer"


class Exhausted(GatewayError):
    """The call failed for good: the client gets this error; `attempts` says what was tried."""

    def __init__(self, error: GatewayError, attempts: list[Attempt]) -> None:
        super().__init__(
            error.status, error.message, type=error.type, code=error.code, param=error.param
        )
        self.attempts = attempts


class Gateway:
    """Serves chat and embeddings calls through the router; every call is recorded."""

    def __init__(
        self,
        router: Router,
        retry: RetryPolicy,
        recorder: Recorder,
        *,
        random: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.router = router
        self._retry = retry
        self._recorder = recorder
        self._random = random
        self._sleep = sleep

    async def chat(self, call: Call) -> bytes:
        """A non-streaming chat completion: the OpenAI response body to send."""

        result, target, attempts = await self._attempt_all(
            call, lambda provider: provider.chat(call.body), "chat.completions"
        )
        self._recorder.record(
            call, kind="generation", name="chat.completions", deployment=target.deployment,
            model=result.model, usage=result.usage, output=result.response.get("choices"),
            attempts=attempts, status_code=200,
        )  # fmt: skip
        return result.body

    async def embeddings(self, call: Call) -> bytes:
        """An embeddings call: the OpenAI response body to send."""

        result, target, attempts = await self._attempt_all(
            call, lambda provider: provider.embeddings(call.body), "embeddings"
        )
        self._recorder.record(
            call, kind="embedding", name="embeddings", deployment=target.deployment,
            model=result.model, usage=result.usage, output=None, attempts=attempts,
            status_code=200,
        )  # fmt: skip
        return result.body

    async def chat_stream(self, call: Call) -> AsyncIterator[bytes]:
        """A streaming chat completion as SSE frames.

        Retries and fallbacks happen until the first frame arrives; only then is
        the generator returned, so failures before that still get a proper error
        status. A failure after that ends the stream with an error frame.
        """

        async def open_first(provider: Provider) -> tuple[ChatStream, AsyncIterator[bytes], bytes]:
            stream = await provider.open_chat_stream(call.body)
            frames = aiter(stream)
            try:
                first = await anext(frames)
            except StopAsyncIteration:
                await stream.aclose()
                raise UpstreamError("malformed", "upstream stream was empty") from None
            except BaseException:
                await stream.aclose()
                raise
            return stream, frames, first

        (stream, frames, first), target, attempts = await self._attempt_all(
            call, open_first, "chat.completions"
        )
        return self._relay(call, stream, frames, first, target, attempts)

    async def _relay(
        self,
        call: Call,
        stream: ChatStream,
        frames: AsyncIterator[bytes],
        first: bytes,
        target: Target,
        attempts: list[Attempt],
    ) -> AsyncIterator[bytes]:
        error: str | None = None
        status_code = 200
        try:
            yield first
            async for frame in frames:
                yield frame
        except UpstreamError as exc:
            error = f"stream broken after start: {exc.describe()}"
            status_code = 502
            yield _error_frame(f"The upstream stream failed: {exc.message}", "api_error")
        except (asyncio.CancelledError, GeneratorExit):
            error, status_code = "client disconnected", CLIENT_CLOSED
            raise
        finally:
            await stream.aclose()
            ttft = None
            if stream.first_token_at is not None:
                ttft = (stream.first_token_at - call.started_perf) * 1000.0
            self._recorder.record(
                call,
                kind="generation",
                name="chat.completions",
                deployment=target.deployment,
                model=stream.model,
                usage=stream.usage,
                output=stream.output.get("choices") if stream.output else None,
                attempts=attempts,
                status_code=status_code,
                error=error,
                ttft_ms=ttft,
                stream=True,
            )

    async def _attempt_all(
        self, call: Call, send: Callable[[Provider], Awaitable[T]], name: str
    ) -> tuple[T, Target, list[Attempt]]:
        kind = "embedding" if name == "embeddings" else "generation"
        attempts: list[Attempt] = []

        def record_failure(status_code: int, error: str) -> None:
            self._recorder.record(
                call, kind=kind, name=name, deployment=None, model=None, usage=None,
                output=None, attempts=attempts, status_code=status_code, error=error,
            )  # fmt: skip

        try:
            return await self._try_targets(call, send, attempts)
        except Exhausted as exc:
            record_failure(exc.status, exc.message)
            raise
        except asyncio.CancelledError:
            record_failure(CLIENT_CLOSED, "client disconnected")
            raise

    async def _try_targets(
        self, call: Call, send: Callable[[Provider], Awaitable[T]], attempts: list[Attempt]
    ) -> tuple[T, Target, list[Attempt]]:
        plan = self.router.plan(call.alias, self._random)
        last: UpstreamError | None = None
        for target in plan:
            deployment = target.deployment
            if deployment.key_ref is not None and deployment.api_key is None:
                attempts.append(
                    Attempt(
                        deployment.name,
                        deployment.provider,
                        deployment.model,
                        f"skipped: {deployment.key_ref[4:]} is not set",
                        None,
                        0.0,
                    )
                )
                continue
            for attempt in range(1, self._retry.max_attempts + 1):
                started = time.perf_counter()
                try:
                    result = await send(target.provider)
                except UpstreamError as exc:
                    last = exc
                    attempts.append(
                        Attempt(
                            deployment.name,
                            deployment.provider,
                            deployment.model,
                            exc.describe(),
                            exc.status,
                            (time.perf_counter() - started) * 1000.0,
                            exc.retry_after_s,
                        )
                    )
                    if not exc.retryable:
                        if exc.status in _MOVE_ON:
                            break
                        raise Exhausted(_client_error(exc, target), attempts) from exc
                    if attempt < self._retry.max_attempts:
                        await self._sleep(
                            backoff_delay(self._retry, attempt, self._random(), exc.retry_after_s)
                        )
                    continue
                except GatewayError as exc:  # the provider refused the request itself
                    raise Exhausted(exc, attempts) from exc
                attempts.append(
                    Attempt(
                        deployment.name,
                        deployment.provider,
                        deployment.model,
                        "ok",
                        200,
                        (time.perf_counter() - started) * 1000.0,
                    )
                )
                return result, target, attempts
        raise Exhausted(_exhausted_error(call.alias, attempts, last), attempts)


def _client_error(exc: UpstreamError, target: Target) -> GatewayError:
    """The upstream's refusal for the client: its status, message, and the type, code and
    param of its error object (clients act on codes such as `context_length_exceeded`)."""
    error = _error_object(exc.body)
    return GatewayError(
        exc.status or 400,
        f"{exc.message} (from {target.deployment.name} "
        f"{target.deployment.provider}/{target.deployment.model})",
        type=_text_field(error, "type") or "invalid_request_error",
        code=_text_field(error, "code") or "upstream_rejected",
        param=_text_field(error, "param"),
    )


def _error_object(body: bytes | None) -> dict[str, Any]:
    if not body:
        return {}
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    error = document.get("error") if isinstance(document, dict) else None
    return error if isinstance(error, dict) else {}


def _text_field(error: dict[str, Any], name: str) -> str | None:
    value = error.get(name)
    return value if isinstance(value, str) and value else None


def _exhausted_error(
    alias: str, attempts: list[Attempt], last: UpstreamError | None
) -> GatewayError:
    tried = "; ".join(
        f"{a.deployment} {a.provider}/{a.model}: {a.outcome}" for a in _grouped(attempts)
    )
    if last is None:
        return GatewayError(
            503,
            f"No deployment of model '{alias}' could be tried. Tried: {tried}.",
            type="api_error",
            code="no_deployment_available",
        )
    if last.kind == "http" and last.status == 429:
        status, type_ = 429, "rate_limit_error"
    elif last.kind == "timeout":
        status, type_ = 504, "timeout"
    else:
        status, type_ = 502, "api_error"
    return GatewayError(
        status,
        f"All {len(attempts)} attempts for model '{alias}' failed. Tried: {tried}.",
        type=type_,
        code="upstream_failed",
    )


def _grouped(attempts: list[Attempt]) -> list[Attempt]:
    """Collapse repeats (`HTTP 500 x3`) so the message stays readable."""
    out: list[Attempt] = []
    counts: list[int] = []
    for attempt in attempts:
        if out and out[-1].deployment == attempt.deployment and out[-1].outcome == attempt.outcome:
            counts[-1] += 1
            continue
        out.append(attempt)
        counts.append(1)
    return [
        a
        if n == 1
        else Attempt(
            a.deployment, a.provider, a.model, f"{a.outcome} (x{n})", a.status, a.latency_ms
        )
        for a, n in zip(out, counts, strict=True)
    ]


def _error_frame(message: str, type_: str) -> bytes:
    payload: dict[str, Any] = {
        "error": {"message": message, "type": type_, "param": None, "code": None}
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"
