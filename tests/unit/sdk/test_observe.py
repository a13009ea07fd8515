"""@keel.observe: the span tree, inputs and outputs, errors, generators, signatures."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import Any

import pytest

import keel
from keel.sdk import Client
from tests.unit.sdk.collector import Collector
from tests.unit.sdk.conftest import Configure


@keel.observe(kind="retrieval")
def retrieve(question: str, k: int = 3) -> list[str]:
    return [f"doc{i}" for i in range(k)]


@keel.observe(name="answer", kind="generation")
async def generate(question: str, docs: list[str]) -> str:
    await asyncio.sleep(0)
    return f"{question}: {len(docs)} docs"


@keel.observe(kind="agent")
async def agent(question: str) -> str:
    docs = retrieve(question, k=2)
    return await generate(question, docs)


async def test_nested_sync_and_async_functions_form_one_tree(
    sdk: Client, collector: Collector
) -> None:
    assert await agent("why") == "why: 2 docs"
    assert keel.flush(5)

    root, child, grandchild = (collector.span(n) for n in ("agent", "retrieve", "answer"))
    assert root.parent is None
    assert child.parent == root.span_id and grandchild.parent == root.span_id
    assert {root.trace_id, child.trace_id, grandchild.trace_id} == {root.trace_id}
    assert len(root.trace_id) == 32 and len(root.span_id) == 16
    assert [s.attributes["keel.span.kind"] for s in (root, child, grandchild)] == [
        "agent",
        "retrieval",
        "generation",
    ]
    assert child.json("keel.input") == {"question": "why", "k": 2}
    assert child.json("keel.output") == ["doc0", "doc1"]
    assert grandchild.json("keel.output") == "why: 2 docs"
    assert root.status == {"code": 1}
    assert int(root.raw["startTimeUnixNano"]) <= int(child.raw["startTimeUnixNano"])
    assert int(child.raw["endTimeUnixNano"]) <= int(root.raw["endTimeUnixNano"])


async def test_tasks_and_threads_with_the_context_are_children(
    sdk: Client, collector: Collector
) -> None:
    @keel.observe
    def in_thread() -> None:
        pass

    @keel.observe
    async def in_task(i: int) -> int:
        await asyncio.sleep(0)
        return i

    @keel.observe
    async def fan_out() -> None:
        await asyncio.gather(in_task(1), in_task(2))
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(in_thread,))
        thread.start()
        thread.join()
        await asyncio.to_thread(in_thread)

    await fan_out()
    assert keel.flush(5)

    root = collector.span("fan_out")
    children = [s for s in collector.spans() if s.name != "fan_out"]
    assert sorted(s.name for s in children) == ["in_task", "in_task", "in_thread", "in_thread"]
    assert all(s.parent == root.span_id and s.trace_id == root.trace_id for s in children)


def test_a_thread_without_the_context_starts_its_own_trace(
    sdk: Client, collector: Collector
) -> None:
    @keel.observe
    def worker() -> None:
        pass

    @keel.observe
    def main() -> None:
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()

    main()
    assert keel.flush(5)
    assert collector.span("worker").parent is None
    assert collector.span("worker").trace_id != collector.span("main").trace_id


def test_an_exception_propagates_unchanged_and_is_recorded(
    sdk: Client, collector: Collector
) -> None:
    error = KeyError("missing")

    @keel.observe(kind="tool")
    def lookup(key: str) -> str:
        raise error

    with pytest.raises(KeyError) as raised:
        lookup("x")
    assert raised.value is error
    assert keel.flush(5)

    span = collector.span("lookup")
    assert span.status == {"code": 2, "message": "KeyError: 'missing'"}
    assert span.attributes["exception.type"] == "KeyError"
    assert span.attributes["exception.message"] == "'missing'"
    assert "keel.output" not in span.attributes


async def test_an_async_exception_propagates_and_is_recorded(
    sdk: Client, collector: Collector
) -> None:
    @keel.observe
    async def fail() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        await fail()
    assert keel.flush(5)
    assert collector.span("fail").status == {"code": 2, "message": "ValueError: bad input"}


def test_a_generator_span_covers_the_iteration(sdk: Client, collector: Collector) -> None:
    @keel.observe
    def step(i: int) -> int:
        return i

    @keel.observe(kind="chain")
    def stream(n: int) -> Iterator[int]:
        for i in range(n):
            yield step(i)
        return

    assert list(stream(3)) == [0, 1, 2]
    assert keel.flush(5)

    span = collector.span("stream")
    assert span.json("keel.output") == [0, 1, 2]
    assert span.json("keel.input") == {"n": 3}
    assert span.status == {"code": 1}
    steps = [s for s in collector.spans() if s.name == "step"]
    assert len(steps) == 3 and all(s.parent == span.span_id for s in steps)


def test_a_generator_closed_early_ends_its_span_with_what_was_yielded(
    sdk: Client, collector: Collector
) -> None:
    closed = []

    @keel.observe
    def numbers() -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            closed.append(True)

    for i in numbers():
        if i == 2:
            break
    assert keel.flush(5)
    assert closed == [True]
    assert collector.span("numbers").json("keel.output") == [0, 1, 2]
    assert collector.span("numbers").status == {"code": 1}


def test_a_generator_that_raises_records_the_error(sdk: Client, collector: Collector) -> None:
    @keel.observe
    def broken() -> Iterator[int]:
        yield 1
        raise RuntimeError("stream cut")

    seen = []
    with pytest.raises(RuntimeError, match="stream cut"):
        for item in broken():
            seen.append(item)
    assert seen == [1]
    assert keel.flush(5)
    assert collector.span("broken").status["code"] == 2
    assert collector.span("broken").json("keel.output") == [1]


def test_send_and_throw_reach_the_wrapped_generator(sdk: Client) -> None:
    @keel.observe
    def echo() -> Generator[str, str, None]:
        received = yield "ready"
        try:
            yield f"got {received}"
        except LookupError:
            yield "caught"

    generator = echo()
    assert next(generator) == "ready"
    assert generator.send("x") == "got x"
    assert generator.throw(LookupError()) == "caught"


async def test_an_async_generator_span_covers_the_iteration(
    sdk: Client, collector: Collector
) -> None:
    @keel.observe
    async def tokens(text: str) -> AsyncIterator[str]:
        for word in text.split():
            await asyncio.sleep(0)
            yield word

    @keel.observe
    async def chat() -> str:
        return " ".join([t async for t in tokens("a b c")])

    assert await chat() == "a b c"
    assert keel.flush(5)
    span = collector.span("tokens")
    assert span.json("keel.output") == ["a", "b", "c"]
    assert span.parent == collector.span("chat").span_id


async def test_an_async_generator_closed_early_and_one_that_raises(
    sdk: Client, collector: Collector
) -> None:
    @keel.observe
    async def endless() -> AsyncGenerator[int, None]:
        i = 0
        while True:
            yield i
            i += 1

    @keel.observe
    async def broken() -> AsyncIterator[int]:
        yield 1
        raise ConnectionError("reset")

    stream = endless()
    assert [await anext(stream), await anext(stream)] == [0, 1]
    await stream.aclose()
    with pytest.raises(ConnectionError):
        async for _ in broken():
            pass
    assert keel.flush(5)
    assert collector.span("endless").json("keel.output") == [0, 1]
    assert collector.span("endless").status == {"code": 1}
    assert collector.span("broken").status["code"] == 2


def _plain(a: int, /, b: str = "x", *args: int, c: float = 1.0, **kwargs: Any) -> int:
    """Docs."""
    return a


async def _coroutine(a: int, *, b: str = "x") -> int:
    return a


def _generator(a: int, b: str = "x") -> Iterator[int]:
    yield a


async def _async_generator(a: int, b: str = "x") -> AsyncIterator[int]:
    yield a


@pytest.mark.parametrize("fn", [_plain, _coroutine, _generator, _async_generator])
def test_the_wrapper_keeps_signature_name_and_flavour(fn: Any) -> None:
    wrapped = keel.observe(kind="tool")(fn)
    assert inspect.signature(wrapped) == inspect.signature(fn)
    assert wrapped.__name__ == fn.__name__ and wrapped.__doc__ == fn.__doc__
    assert wrapped.__wrapped__ is fn
    for check in (
        inspect.iscoroutinefunction,
        inspect.isgeneratorfunction,
        inspect.isasyncgenfunction,
    ):
        assert check(wrapped) == check(fn)


def test_an_unknown_kind_is_refused_when_decorating() -> None:
    with pytest.raises(ValueError, match=r"unknown span kind 'llm'.*generation"):
        keel.observe(kind="llm")
    with pytest.raises(ValueError, match="unknown span kind"):
        keel.span("block", kind="model")


def test_methods_leave_self_out_and_extra_positionals_are_named(
    sdk: Client, collector: Collector
) -> None:
    class Retriever:
        @keel.observe
        def search(self, query: str, *filters: str, top: int = 1) -> int:
            return top

    Retriever().search("q", "a", "b", top=2)
    assert keel.flush(5)
    assert collector.span("search").json("keel.input") == {
        "query": "q",
        "filters": ["a", "b"],
        "top": 2,
    }


def test_capture_can_be_switched_off_per_function_and_globally(
    configure: Configure, collector: Collector
) -> None:
    @keel.observe(capture_input=False)
    def secret_in(password: str) -> str:
        return "ok"

    @keel.observe(capture_output=False)
    def secret_out() -> str:
        return "token"

    @keel.observe(capture_input=True)
    def forced(x: int) -> int:
        return x

    configure()
    secret_in("hunter2")
    secret_out()
    assert keel.flush(5)
    assert "keel.input" not in collector.span("secret_in").attributes
    assert collector.span("secret_in").json("keel.output") == "ok"
    assert "keel.output" not in collector.span("secret_out").attributes

    configure(capture=False)
    forced(7)
    assert keel.flush(5)
    assert collector.span("forced").json("keel.input") == {"x": 7}
    assert "keel.output" not in collector.span("forced").attributes


def test_an_unserialisable_argument_does_not_break_the_call(
    sdk: Client, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    class Model:
        def model_dump(self) -> dict[str, Any]:
            raise RuntimeError("cannot dump")

    @keel.observe
    def use(model: Model) -> str:
        return "used"

    with caplog.at_level(logging.WARNING, logger="keel.sdk"):
        assert use(Model()) == "used"
        assert use(Model()) == "used"
    assert keel.flush(5)
    spans = collector.spans()
    assert len(spans) == 2
    assert spans[0].json("keel.input").startswith("<unserialisable dict: cannot dump")
    assert spans[0].json("keel.output") == "used"
    assert len([r for r in caplog.records if "serialising" in r.getMessage()]) == 1


def test_odd_values_are_captured_readably(sdk: Client, collector: Collector) -> None:
    loop: list[Any] = [1]
    loop.append(loop)

    @keel.observe
    def odd(values: Any) -> None:
        pass

    odd({"set": {1}, "bytes": b"abc", "nan": float("nan"), "loop": loop, (1, 2): "tuple key"})
    assert keel.flush(5)
    assert collector.span("odd").json("keel.input") == {
        "values": {
            "set": [1],
            "bytes": "<3 bytes>",
            "nan": "nan",
            "loop": [1, "<cycle>"],
            "(1, 2)": "tuple key",
        }
    }


async def test_a_disabled_sdk_records_nothing_and_calls_through(
    configure: Configure, collector: Collector
) -> None:
    @keel.observe
    def echo() -> Generator[str, str, None]:
        received = yield "ready"
        yield f"got {received}"

    @keel.observe
    async def echo_async() -> AsyncGenerator[str, str]:
        received = yield "ready"
        yield f"got {received}"

    configure(enabled=False)
    assert retrieve("q", k=1) == ["doc0"]
    assert await agent("q") == "q: 2 docs"
    with keel.span("block") as span:
        span.update(output="ignored")
        assert keel.trace_headers() == {}
    generator = echo()
    assert (next(generator), generator.send("x")) == ("ready", "got x")
    agenerator = echo_async()
    assert (await anext(agenerator), await agenerator.asend("y")) == ("ready", "got y")
    await agenerator.aclose()
    assert keel.flush(5)
    assert collector.received == []
