"""`@keel.observe`: a span around every call of a function, coroutine or generator.

The wrapper keeps the function's identity (`functools.wraps`: name, docstring,
`__wrapped__`, hence the same `inspect.signature`) and its flavour: a coroutine
function stays one, a generator function stays one, so frameworks that inspect
the function still see what it is. The function's outcome is untouched: its
return value, its exception (the same object, re-raised), its yielded items.

Generators: the span covers the whole iteration, from the first `next()` to
exhaustion, `close()` or an exception; the current span is set only while the
generator's own code runs, not while the consumer holds a yielded item. Its
output is the list of yielded items (at most `max_field_bytes // 2` of them are
kept; more would be truncated anyway).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, Final, TypeVar, cast, overload

from keel.sdk.capture import ArgumentNames
from keel.sdk.client import Client, active_client
from keel.sdk.spans import LiveSpan, check_kind
from keel.sdk.tracer import current_span_var, end_span, fail_span, open_span

F = TypeVar("F", bound=Callable[..., Any])

_set: Final = current_span_var.set
_reset: Final = current_span_var.reset


class _Observed:
    """What the wrapper of one decorated function needs at every call."""

    __slots__ = ("arguments", "capture_input", "capture_output", "kind", "name")

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str | None,
        kind: str,
        capture_input: bool | None,
        capture_output: bool | None,
    ) -> None:
        self.name = name or str(getattr(fn, "__name__", "function"))
        self.kind = kind
        self.capture_input = capture_input
        self.capture_output = capture_output
        self.arguments = ArgumentNames(fn)

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> LiveSpan | None:
        """The call's span, or None (disabled SDK, or an SDK failure: run the bare function)."""
        client = active_client()
        if client is None:
            return None
        try:
            span = open_span(client, self.name, self.kind)
            if span.sampled and not span.end_ns and self._captures_input(client):
                span.capture_input(self.arguments.bind(args, kwargs), owned=True)
            return span
        except Exception as exc:
            client.log.internal_error(f"starting span {self.name!r}", exc)
            return None

    def _captures_input(self, client: Client) -> bool:
        return client.capture if self.capture_input is None else self.capture_input

    def captures_output(self, span: LiveSpan) -> bool:
        """Whether the return value (or the yielded items) should be recorded."""
        if not span.sampled or span.client is None:
            return False
        return span.client.capture if self.capture_output is None else self.capture_output


@overload
def observe(func: F, /) -> F: ...


@overload
def observe(
    func: None = None,
    /,
    *,
    name: str | None = None,
    kind: str = "span",
    capture_input: bool | None = None,
    capture_output: bool | None = None,
) -> Callable[[F], F]: ...


def observe(
    func: F | None = None,
    /,
    *,
    name: str | None = None,
    kind: str = "span",
    capture_input: bool | None = None,
    capture_output: bool | None = None,
) -> F | Callable[[F], F]:
    """Record a span for every call of the decorated function (`@observe` or `@observe(...)`).

    `name` defaults to the function's name; `kind` is one of `keel.sdk.SPAN_KINDS`
    (ValueError otherwise, at decoration time); `capture_input`/`capture_output`
    override the `capture` setting for this function.
    """
    check_kind(kind)

    def decorate(fn: F) -> F:
        observed = _Observed(fn, name, kind, capture_input, capture_output)
        if inspect.isasyncgenfunction(fn):
            return cast(F, _wrap_async_generator(fn, observed))
        if inspect.isgeneratorfunction(fn):
            return cast(F, _wrap_generator(fn, observed))
        if inspect.iscoroutinefunction(fn):
            return cast(F, _wrap_coroutine(fn, observed))
        return cast(F, _wrap_function(fn, observed))

    return decorate if func is None else decorate(func)


def _wrap_function(fn: Callable[..., Any], observed: _Observed) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        span = observed.start(args, kwargs)
        if span is None:
            return fn(*args, **kwargs)
        token = _set(span)
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:
            _reset(token)
            fail_span(span, error)
            raise
        _reset(token)
        end_span(span, result, observed.captures_output(span))
        return result

    return wrapper


def _wrap_coroutine(fn: Callable[..., Any], observed: _Observed) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        span = observed.start(args, kwargs)
        if span is None:
            return await fn(*args, **kwargs)
        token = _set(span)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as error:
            _reset(token)
            fail_span(span, error)
            raise
        _reset(token)
        end_span(span, result, observed.captures_output(span))
        return result

    return wrapper


class _Items:
    """The yielded items kept as a generator's output, bounded in number."""

    __slots__ = ("items", "room")

    def __init__(self, span: LiveSpan | None, keep: bool) -> None:
        client = None if span is None else span.client
        self.items: list[Any] = []
        self.room = client.config.max_field_bytes // 2 if keep and client is not None else 0

    def add(self, item: Any) -> None:
        if self.room > 0:
            self.room -= 1
            self.items.append(item)


def _wrap_generator(fn: Callable[..., Any], observed: _Observed) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        span = observed.start(args, kwargs)
        if span is None:
            return (yield from fn(*args, **kwargs))
        keep = observed.captures_output(span)
        output = _Items(span, keep)
        sent: Any = None
        thrown: BaseException | None = None
        generator: Generator[Any, Any, Any] | None = None
        while True:
            token = _set(span)
            try:
                if generator is None:
                    generator = fn(*args, **kwargs)
                if thrown is None:
                    item = generator.send(sent)
                else:
                    error, thrown = thrown, None
                    item = generator.throw(error)
            except StopIteration as stop:
                end_span(span, output.items, keep, owned=True)
                return stop.value
            except BaseException as error:
                fail_span(span, error, output.items, keep)
                raise
            finally:
                _reset(token)
            output.add(item)
            try:
                sent = yield item
            except GeneratorExit:  # closed by the consumer before the end
                token = _set(span)
                try:
                    generator.close()
                except BaseException as error:
                    fail_span(span, error, output.items, keep)
                    raise
                finally:
                    _reset(token)
                end_span(span, output.items, keep, owned=True)
                raise
            except BaseException as error:  # thrown in by the consumer: pass it on
                thrown, sent = error, None

    return wrapper


def _wrap_async_generator(fn: Callable[..., Any], observed: _Observed) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        # No `yield from` for async generators: sending, throwing and closing are relayed
        # by hand, with the span current only while the generator's own code runs.
        span = observed.start(args, kwargs)
        keep = span is not None and observed.captures_output(span)
        output = _Items(span, keep)
        sent: Any = None
        thrown: BaseException | None = None
        agen: AsyncGenerator[Any, Any] | None = None
        while True:
            token = None if span is None else _set(span)
            try:
                if agen is None:
                    agen = fn(*args, **kwargs)
                if thrown is None:
                    item = await agen.asend(sent)
                else:
                    error, thrown = thrown, None
                    item = await agen.athrow(error)
            except StopAsyncIteration:
                if span is not None:
                    end_span(span, output.items, keep, owned=True)
                return
            except BaseException as error:
                if span is not None:
                    fail_span(span, error, output.items, keep)
                raise
            finally:
                if token is not None:
                    _reset(token)
            output.add(item)
            try:
                sent = yield item
            except GeneratorExit:  # closed by the consumer before the end
                token = None if span is None else _set(span)
                try:
                    await agen.aclose()
                except BaseException as error:
                    if span is not None:
                        fail_span(span, error, output.items, keep)
                    raise
                finally:
                    if token is not None:
                        _reset(token)
                if span is not None:
                    end_span(span, output.items, keep, owned=True)
                raise
            except BaseException as error:  # thrown in by the consumer: pass it on
                thrown, sent = error, None

    return wrapper
