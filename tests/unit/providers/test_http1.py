"""Keel's HTTP/1.1 client (keel.providers.http1), with aiohttp as the oracle.

The same exchanges and faults run through both clients, against the shipped FakeUpstream
and against `RawUpstream` for what a provider's server rarely does on purpose; then what
only a pooling client has to get right: keep-alive, pool limits, cancellation, flow
control, TLS; and the `HttpTransport` wrapper the providers use.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import socket
import ssl
import subprocess
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
import pytest

from keel.core.errors import UpstreamError
from keel.providers import http1
from keel.providers.http1 import _PAUSE_AT, Client
from keel.providers.transport import HttpTransport
from keel.testing import Behavior, FakeUpstream, Fault
from tests.unit.providers.http_oracle import (
    JSON_HEADERS,
    Answer,
    RawUpstream,
    Reply,
    eventually,
    response,
    send,
    via_aiohttp,
    via_http1,
)

TIMEOUT_S = 0.2
LATE_S = 0.15  # how much later than its timeout a request may fail
CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]})
STREAM = orjson.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "stream": True}
)
LARGE_REPLY = "lorem ipsum " * 250_000  # a 3 MB answer
OK = response(b'{"ok":true}', headers=b"Content-Type: application/json\r\n")


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    client = Client()
    yield client
    client.close()
    await asyncio.sleep(0)  # let the aborted transports finish closing


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Client]]:
    """Clients with other settings than the default, closed after the test."""
    clients: list[Client] = []

    def make(*, limit_per_origin: int = 1000, tls: ssl.SSLContext | None = None) -> Client:
        clients.append(Client(limit_per_origin=limit_per_origin, tls=tls))
        return clients[-1]

    yield make
    for client in clients:
        client.close()
    await asyncio.sleep(0)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    transport = HttpTransport()
    yield transport
    await transport.close()


def _chat_url(fake: FakeUpstream) -> str:
    return fake.url + "/v1/chat/completions"


def _stable(body: bytes) -> bytes:
    """`body` without what the fake changes per request: the completion id and time."""
    body = re.sub(rb"chatcmpl-fake\d+", b"chatcmpl-fake", body)
    return re.sub(rb'"created":\d+', b'"created":0', body)


# -- the same exchanges through both clients -------------------------------------------------


@pytest.mark.parametrize(
    ("script", "request_body", "status", "expected"),
    [
        pytest.param(None, CHAT, 200, b'"content":"Echo: hello"', id="json-answer"),
        pytest.param(Fault.status(400), CHAT, 400, b'"error":{', id="400"),
        pytest.param(Fault.status(429, retry_after=7), CHAT, 429, b'"error":{', id="429"),
        pytest.param(Fault.status(500), CHAT, 500, b'"error":{', id="500"),
        pytest.param(Fault.status(429, retry_after=7), STREAM, 429, b'"error":{', id="429-stream"),
        pytest.param(Behavior(chunks=300), STREAM, 200, b"data: [DONE]\n\n", id="sse-300-chunks"),
        pytest.param(Behavior(reply=LARGE_REPLY), CHAT, 200, LARGE_REPLY.encode(), id="3MB-json"),
        pytest.param(
            Behavior(reply=LARGE_REPLY, chunks=40), STREAM, 200, b"data: [DONE]", id="3MB-sse"
        ),
    ],
)
async def test_answers_match_aiohttp(
    fake: FakeUpstream,
    client: Client,
    session: aiohttp.ClientSession,
    script: Fault | Behavior | None,
    request_body: bytes,
    status: int,
    expected: bytes,
) -> None:
    if script is not None:
        fake.enqueue(script, script)  # one for each client
    streaming = b'"stream":true' in request_body

    ours = await via_http1(client, _chat_url(fake), request_body, streaming=streaming)
    oracle = await via_aiohttp(session, _chat_url(fake), request_body, streaming=streaming)

    assert ours.status == oracle.status == status
    assert expected in ours.body
    assert _stable(ours.body) == _stable(oracle.body)
    sse = streaming and status == 200
    content_type = "text/event-stream; charset=utf-8" if sse else "application/json"
    assert ours.content_type == oracle.content_type == content_type
    assert ours.retry_after == oracle.retry_after == ("7" if status == 429 else None)
    assert [r.body for r in fake.requests] == [request_body, request_body]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        pytest.param(
            send(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
            ),
            b"hello world",
            id="chunked",
        ),
        pytest.param(
            send(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"z" * 300_000, close=True
            ),
            b"z" * 300_000,
            id="close-delimited",
        ),
        pytest.param(
            send(
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + OK
            ),
            b'{"ok":true}',
            id="1xx-interim-answers",
        ),
    ],
)
async def test_framings_are_read_like_aiohttp(
    client: Client, session: aiohttp.ClientSession, reply: Reply, expected: bytes
) -> None:
    async with RawUpstream(default=reply) as server:
        ours = await via_http1(client, server.url, b"{}")
        streamed = await via_http1(client, server.url, b"{}", streaming=True)
        oracle = await via_aiohttp(session, server.url, b"{}")

    assert ours.status == streamed.status == oracle.status == 200
    assert ours.body == streamed.body == oracle.body == expected


async def test_an_interim_answer_leaves_no_headers_and_the_connection_reusable(
    client: Client,
) -> None:
    early_hints = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
    async with RawUpstream(default=send(early_hints + OK)) as server:
        endpoint = client.endpoint(server.url, {})
        first = await client.post(endpoint, b"{}", 5.0, streaming=False)
        assert await first.read_all() == b'{"ok":true}'
        second = await client.post(endpoint, b"{}", 5.0, streaming=False)
        assert await second.read_all() == b'{"ok":true}'

    assert first.header("link") is None
    assert first.header("content-type") == "application/json"
    assert server.accepted == 1


def _raw_deflate(data: bytes) -> bytes:
    """Deflate without the zlib header, as some servers send "deflate"."""
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", _raw_deflate)],
    ids=["gzip", "deflate", "raw-deflate"],
)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_compressed_bodies_are_decoded_like_aiohttp(
    client: Client,
    session: aiohttp.ClientSession,
    encoding: str,
    compress: Callable[[bytes], bytes],
    chunked: bool,
) -> None:
    plain = orjson.dumps([{"index": i, "text": f"token {i}"} for i in range(20_000)])
    packed = compress(plain)
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: %b\r\n" % encoding.encode()
    if chunked:  # several chunks, so the decoder is fed in pieces
        pieces = [packed[i : i + 5000] for i in range(0, len(packed), 5000)]
        wire = head + b"Transfer-Encoding: chunked\r\n\r\n"
        wire += b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    else:
        wire = head + b"Content-Length: %d\r\n\r\n%b" % (len(packed), packed)

    async with RawUpstream(default=send(wire)) as server:
        ours = await via_http1(client, server.url, b"{}")
        streamed = await via_http1(client, server.url, b"{}", streaming=True)
        oracle = await via_aiohttp(session, server.url, b"{}")

    assert len(packed) < len(plain) / 2
    assert ours.body == streamed.body == oracle.body == plain


@pytest.mark.parametrize("streaming", [False, True], ids=["read-whole", "streamed"])
async def test_an_undecodable_compressed_body_is_a_connection_error(
    client: Client, session: aiohttp.ClientSession, streaming: bool
) -> None:
    packed = gzip.compress(b"hello world " * 5000)
    corrupt = packed[:10] + b"\xff" * 50 + packed[60:]
    wire = response(corrupt, headers=b"Content-Encoding: gzip\r\n")
    async with RawUpstream(default=send(wire)) as server:
        with pytest.raises(aiohttp.ClientPayloadError):
            await via_aiohttp(session, server.url, b"{}", streaming=streaming)
        with pytest.raises(UpstreamError) as ours:
            await via_http1(client, server.url, b"{}", streaming=streaming)

    assert ours.value.kind == "connection"


# -- the same faults through both clients ----------------------------------------------------


async def _timed_failure(request: Awaitable[Answer]) -> tuple[BaseException, float]:
    """The exception `request` failed with, and how long it took to fail."""
    started = time.monotonic()
    try:
        await request
    except Exception as exc:
        return exc, time.monotonic() - started
    raise AssertionError("the request did not fail")


def _is_timeout_on_time(ours: BaseException, elapsed: float) -> bool:
    in_time = TIMEOUT_S - 0.01 <= elapsed < TIMEOUT_S + LATE_S
    return isinstance(ours, UpstreamError) and ours.kind == "timeout" and in_time


async def test_an_answer_slower_than_the_timeout_times_out_on_time(
    fake: FakeUpstream, client: Client, session: aiohttp.ClientSession
) -> None:
    fake.enqueue(Fault.delay(2.0), Fault.delay(2.0))

    (ours, elapsed), (oracle, _) = await asyncio.gather(
        _timed_failure(via_http1(client, _chat_url(fake), CHAT, timeout_s=TIMEOUT_S)),
        _timed_failure(via_aiohttp(session, _chat_url(fake), CHAT, timeout_s=TIMEOUT_S)),
    )

    assert _is_timeout_on_time(ours, elapsed), (ours, elapsed)
    assert isinstance(oracle, TimeoutError)


async def test_a_body_that_stalls_past_the_timeout_times_out_on_time(
    client: Client, session: aiohttp.ClientSession
) -> None:
    half_answer = response(b"x" * 1000)[:-500]
    async with RawUpstream(default=send(half_answer)) as server:
        (ours, elapsed), (oracle, _) = await asyncio.gather(
            _timed_failure(via_http1(client, server.url, b"{}", timeout_s=TIMEOUT_S)),
            _timed_failure(via_aiohttp(session, server.url, b"{}", timeout_s=TIMEOUT_S)),
        )

    assert _is_timeout_on_time(ours, elapsed), (ours, elapsed)
    assert isinstance(oracle, TimeoutError)


async def test_a_stream_that_never_starts_times_out_on_time(
    fake: FakeUpstream, client: Client, session: aiohttp.ClientSession
) -> None:
    fake.enqueue(Fault.hang(), Fault.hang())
    url = _chat_url(fake)

    (ours, elapsed), (oracle, _) = await asyncio.gather(
        _timed_failure(via_http1(client, url, STREAM, timeout_s=TIMEOUT_S, streaming=True)),
        _timed_failure(via_aiohttp(session, url, STREAM, timeout_s=TIMEOUT_S, streaming=True)),
    )

    assert _is_timeout_on_time(ours, elapsed), (ours, elapsed)
    assert isinstance(oracle, TimeoutError)


async def test_a_stream_that_stalls_between_chunks_times_out(
    fake: FakeUpstream, client: Client, session: aiohttp.ClientSession
) -> None:
    fake.enqueue(Fault.slow_stream(2.0), Fault.slow_stream(2.0))
    url = _chat_url(fake)

    async def read_past_the_first_chunk() -> Answer:
        stream = await client.post(
            client.endpoint(url, JSON_HEADERS), STREAM, TIMEOUT_S, streaming=True
        )
        assert (await stream.read_some()).startswith(b"data: {")
        await stream.read_some()
        raise AssertionError("the stream did not stall")

    (ours, elapsed), (oracle, _) = await asyncio.gather(
        _timed_failure(read_past_the_first_chunk()),
        _timed_failure(via_aiohttp(session, url, STREAM, timeout_s=TIMEOUT_S, streaming=True)),
    )

    assert _is_timeout_on_time(ours, elapsed), (ours, elapsed)
    assert isinstance(oracle, TimeoutError)


async def test_a_stream_longer_than_the_timeout_is_not_cut_off_while_chunks_keep_coming(
    fake: FakeUpstream, client: Client, session: aiohttp.ClientSession
) -> None:
    fake.default = Behavior(chunks=3)  # six SSE events, five gaps
    fake.enqueue(Fault.slow_stream(0.06), Fault.slow_stream(0.06))
    url = _chat_url(fake)

    started = time.monotonic()
    ours, oracle = await asyncio.gather(
        via_http1(client, url, STREAM, timeout_s=TIMEOUT_S, streaming=True),
        via_aiohttp(session, url, STREAM, timeout_s=TIMEOUT_S, streaming=True),
    )
    elapsed = time.monotonic() - started

    assert elapsed > TIMEOUT_S
    assert ours.body.endswith(b"data: [DONE]\n\n")
    assert _stable(ours.body) == _stable(oracle.body)


@pytest.mark.parametrize(
    ("fault", "request_body"),
    [
        pytest.param(Fault.reset(), CHAT, id="reset"),
        pytest.param(Fault.truncate_stream(after_chunks=2), STREAM, id="truncated-stream"),
        pytest.param(Fault.truncate_stream(), CHAT, id="truncated-body"),
    ],
)
async def test_a_broken_connection_is_a_connection_error(
    fake: FakeUpstream,
    client: Client,
    session: aiohttp.ClientSession,
    fault: Fault,
    request_body: bytes,
) -> None:
    fake.enqueue(fault, fault)
    streaming = request_body is STREAM

    with pytest.raises(UpstreamError) as ours:
        await via_http1(client, _chat_url(fake), request_body, streaming=streaming)
    with pytest.raises(aiohttp.ClientError) as oracle:
        await via_aiohttp(session, _chat_url(fake), request_body, streaming=streaming)

    assert ours.value.kind == "connection"
    assert not isinstance(oracle.value, TimeoutError)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(send(b"", close=True), id="closed-before-any-answer"),
        pytest.param(send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), id="not-http"),
        pytest.param(send(b"HTTP/1.1 200 OK\r\nContent-Len", close=True), id="head-cut-off"),
    ],
)
async def test_no_valid_answer_is_a_connection_error(
    client: Client, session: aiohttp.ClientSession, reply: Reply
) -> None:
    async with RawUpstream(default=reply) as server:
        with pytest.raises(UpstreamError) as ours:
            await via_http1(client, server.url, b"{}", timeout_s=2.0)
        with pytest.raises(aiohttp.ClientError) as oracle:
            await via_aiohttp(session, server.url, b"{}", timeout_s=2.0)

    assert ours.value.kind == "connection"
    assert not isinstance(oracle.value, TimeoutError)


async def test_a_refused_connection_is_a_connection_error(
    client: Client, session: aiohttp.ClientSession
) -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"

    with pytest.raises(UpstreamError) as ours:
        await via_http1(client, url, b"{}")
    with pytest.raises(aiohttp.ClientConnectorError):
        await via_aiohttp(session, url, b"{}")

    assert ours.value.kind == "connection"
    assert "cannot connect" in ours.value.message


# -- connections: keep-alive, limits, cancellation -------------------------------------------


async def test_sequential_requests_reuse_one_connection(client: Client) -> None:
    async with RawUpstream() as server:
        answers = [await via_http1(client, server.url, b"{}") for _ in range(5)]

    assert [a.status for a in answers] == [200] * 5
    assert (server.accepted, len(server.heads)) == (1, 5)


async def test_a_connection_the_server_closed_while_idle_is_not_reused(client: Client) -> None:
    async with RawUpstream(send(OK, close=True)) as server:
        await via_http1(client, server.url, b"{}")
        await eventually(lambda: server.open == 0)
        await asyncio.sleep(0.02)  # the client sees the FIN, as it would long before reuse
        second = await via_http1(client, server.url, b"{}")

    assert second.body == b'{"ok":true}'
    assert server.accepted == 2


async def test_an_answer_with_connection_close_is_not_reused(client: Client) -> None:
    closing = response(b'{"ok":true}', headers=b"Connection: close\r\n")
    async with RawUpstream(send(closing)) as server:  # the server leaves it open
        await via_http1(client, server.url, b"{}")
        await eventually(lambda: server.closed_by_client == 1)
        second = await via_http1(client, server.url, b"{}")

    assert second.status == 200
    assert server.accepted == 2


async def test_a_connection_idle_past_keepalive_is_not_reused(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http1, "KEEPALIVE_S", 0.0)
    async with RawUpstream() as server:
        await via_http1(client, server.url, b"{}")
        second = await via_http1(client, server.url, b"{}")
        await eventually(lambda: server.closed_by_client == 1)

    assert second.status == 200
    assert server.accepted == 2


async def test_the_pool_limit_bounds_open_connections(
    make_client: Callable[..., Client],
) -> None:
    limited = make_client(limit_per_origin=2)
    async with RawUpstream(default=send(OK, delay_s=0.05)) as server:
        answers = await asyncio.gather(*(via_http1(limited, server.url, b"{}") for _ in range(5)))

    assert [a.status for a in answers] == [200] * 5
    assert server.max_open == server.accepted == 2


async def test_waiting_for_a_free_connection_is_bounded_by_the_timeout(
    make_client: Callable[..., Client],
) -> None:
    limited = make_client(limit_per_origin=1)
    async with RawUpstream(send(b"")) as server:  # the first request never gets an answer
        busy = asyncio.create_task(via_http1(limited, server.url, b"{}", timeout_s=5.0))
        await eventually(lambda: len(server.heads) == 1)
        started = time.monotonic()
        with pytest.raises(UpstreamError) as waiting:
            await via_http1(limited, server.url, b"{}", timeout_s=TIMEOUT_S)
        elapsed = time.monotonic() - started
        busy.cancel()
        with pytest.raises(asyncio.CancelledError):
            await busy

    assert waiting.value.kind == "timeout"
    assert TIMEOUT_S - 0.01 <= elapsed < TIMEOUT_S + LATE_S


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"", id="before-the-head"),
        pytest.param(response(b"x" * 1000)[:-500], id="mid-body"),
    ],
)
async def test_cancelling_a_request_closes_its_connection(
    transport: HttpTransport, sent: bytes
) -> None:
    async with RawUpstream(send(sent)) as server:
        endpoint = transport.endpoint(server.url + "/v1/chat/completions", JSON_HEADERS)
        request = asyncio.create_task(transport.post(endpoint, b"{}", 5.0))
        await eventually(lambda: len(server.heads) == 1)
        await asyncio.sleep(0.02)  # what the server sent has arrived
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await eventually(lambda: server.closed_by_client == 1)
        reply = await transport.post(endpoint, b"{}", 5.0)

    assert (reply.status, reply.body) == (200, b'{"ok":true}')
    assert server.accepted == 2


# -- flow control ----------------------------------------------------------------------------


def _large_stream(size: int, written: list[int] | None = None) -> Reply:
    """A reply that writes a `size`-byte body as fast as the client takes it.

    `written[0]` follows how much of the body the server has handed to the socket so far.
    """
    progress = written if written is not None else [0]

    async def reply(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        piece = b"x" * 65536
        progress[0] = 0
        while progress[0] < size:
            writer.write(piece[: size - progress[0]])
            await writer.drain()
            progress[0] += min(len(piece), size - progress[0])

    return reply


async def _settled(value: Callable[[], int]) -> int:
    """`value()` once it has not changed for 100 ms."""
    last, still = value(), 0
    while still < 5:
        await asyncio.sleep(0.02)
        current = value()
        last, still = current, still + 1 if current == last else 0
    return last


async def test_a_stream_read_slowly_makes_the_upstream_wait(client: Client) -> None:
    size, written = 16 * 2**20, [0]
    async with RawUpstream(_large_stream(size, written)) as server:
        stream = await client.post(client.endpoint(server.url, {}), b"{}", 5.0, streaming=True)
        received = len(await stream.read_some())
        held_back = size - await _settled(lambda: written[0])
        while data := await stream.read_some():
            received += len(data)

    assert held_back > size / 2  # the unread answer is not all in the client's memory
    assert received == size


async def test_a_reader_slower_than_the_timeout_does_not_time_out_a_waiting_upstream(
    client: Client,
) -> None:
    # The gap timeout is there to catch an upstream that stalls. While the reader holds the
    # socket back, the upstream is waiting for us, so the timer must not blame it. (Here
    # Keel departs from its oracle: aiohttp 3.14 raises its socket read timeout.)
    async def read_slowly(read: Callable[[], Awaitable[bytes]]) -> int:
        received = len(await read())
        await asyncio.sleep(TIMEOUT_S * 2)
        while data := await read():
            received += len(data)
        return received

    size = 8 * 2**20
    async with RawUpstream(default=_large_stream(size)) as server:
        stream = await client.post(
            client.endpoint(server.url, {}), b"{}", TIMEOUT_S, streaming=True
        )
        try:
            received = await read_slowly(stream.read_some)
        finally:
            stream.close()

    assert received == size


async def test_a_stream_finished_while_held_back_leaves_its_connection_usable(
    client: Client,
) -> None:
    sent = asyncio.Event()

    async def crosses_the_pause_mark_with_its_last_bytes(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (_PAUSE_AT + 999))
        writer.write(b"x" * (_PAUSE_AT - 1))
        await asyncio.sleep(0.05)  # all of it read by the client (still under the mark)
        writer.write(b"x" * 1000)
        sent.set()

    async with RawUpstream(crosses_the_pause_mark_with_its_last_bytes) as server:
        endpoint = client.endpoint(server.url, {})
        stream = await client.post(endpoint, b"{}", 5.0, streaming=True)
        await sent.wait()
        await asyncio.sleep(0.02)  # the last bytes arrive before anything is read
        received = 0
        while data := await stream.read_some():
            received += len(data)
        assert received == _PAUSE_AT + 999
        second = await via_http1(client, server.url, b"{}", timeout_s=TIMEOUT_S)

    assert second.status == 200
    assert server.accepted == 1


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    names = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run([*command, *names, *files], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def serving_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


async def test_https_to_a_trusted_certificate_matches_aiohttp(
    certificate: tuple[Path, Path],
    serving_tls: ssl.SSLContext,
    make_client: Callable[..., Client],
    session: aiohttp.ClientSession,
) -> None:
    trusting = ssl.create_default_context(cafile=certificate[0])
    client = make_client(tls=trusting)
    async with RawUpstream(tls=serving_tls) as server:
        ours = await via_http1(client, server.url + "/v1", b"{}")
        again = await via_http1(client, server.url + "/v1", b"{}")
        oracle = await via_aiohttp(session, server.url + "/v1", b"{}", tls=trusting)

    assert server.url.startswith("https://")
    assert ours == again == oracle
    assert ours.body == b'{"ok":true}'
    assert server.accepted == 2  # one for each client: ours kept its TLS connection


async def test_https_to_an_untrusted_certificate_is_a_connection_error(
    client: Client, serving_tls: ssl.SSLContext, session: aiohttp.ClientSession
) -> None:
    async with RawUpstream(tls=serving_tls) as server:
        with pytest.raises(UpstreamError) as ours:
            await via_http1(client, server.url, b"{}")
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await via_aiohttp(session, server.url, b"{}")

    assert ours.value.kind == "connection"
    assert "CERTIFICATE_VERIFY_FAILED" in ours.value.message


# -- endpoints ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Note": "a\r\nX-Injected: 1"}, id="crlf-in-value"),
        pytest.param({"X-Note": "a\nb"}, id="lf-in-value"),
        pytest.param({"X-Note": "a\rb"}, id="cr-in-value"),
        pytest.param({"X-Note": "a\0b"}, id="nul-in-value"),
        pytest.param({"X-Bad\r\nName": "v"}, id="crlf-in-name"),
        pytest.param({"X-Bad:Name": "v"}, id="colon-in-name"),
        pytest.param({"": "v"}, id="empty-name"),
    ],
)
def test_a_header_that_would_break_the_request_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="invalid HTTP header"):
        Client().endpoint("http://127.0.0.1:9/v1/chat/completions", headers)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/v1", "ws://example.com/v1", "localhost:8080/v1", "/v1/chat", "http:///v1"],
)
def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        Client().endpoint(url, {})


async def test_fixed_headers_cannot_override_host_or_framing(client: Client) -> None:
    overrides = {"Host": "elsewhere", "Content-Length": "0", "Connection": "close"}
    async with RawUpstream() as server:
        endpoint = client.endpoint(
            server.url + "/v1/chat?api-version=1",
            {"Authorization": "Bearer sk-test", **overrides, "Transfer-Encoding": "chunked"},
        )
        for _ in range(2):
            answer = await client.post(endpoint, b'{"a":1}', 5.0, streaming=False)
            assert await answer.read_all() == b'{"ok":true}'

    lines = server.heads[0].decode("latin-1").split("\r\n")
    framing_names = ("host", "content-length", "connection", "transfer-encoding")
    framing = [line for line in lines if line.split(":")[0].lower() in framing_names]
    assert lines[0] == "POST /v1/chat?api-version=1 HTTP/1.1"
    assert "Authorization: Bearer sk-test" in lines
    assert framing == [f"Host: 127.0.0.1:{server.port}", "Content-Length: 7"]
    assert server.accepted == 1


async def test_the_host_header_of_an_ipv6_upstream_matches_aiohttp(
    client: Client, session: aiohttp.ClientSession
) -> None:
    async with RawUpstream(host="::1") as server:
        await via_http1(client, server.url, b"{}")
        await via_aiohttp(session, server.url, b"{}")

    ours, oracle = (_host_header(head) for head in server.heads)
    assert ours == oracle == f"[::1]:{server.port}"


def _host_header(head: bytes) -> str:
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "host":
            return value.strip()
    raise AssertionError(f"no Host header in {head!r}")


# -- HttpTransport, as the providers use it ----------------------------------------------------


async def test_transport_post_reads_retry_after_from_a_429(
    fake: FakeUpstream, transport: HttpTransport
) -> None:
    fake.enqueue(Fault.status(429, retry_after=7))
    endpoint = transport.endpoint(_chat_url(fake), JSON_HEADERS)

    limited = await transport.post(endpoint, CHAT, 5.0)
    answered = await transport.post(endpoint, CHAT, 5.0)

    assert (limited.status, limited.retry_after_s) == (429, 7.0)
    assert orjson.loads(limited.body)["error"]["code"] == "rate_limit_exceeded"
    assert (answered.status, answered.retry_after_s) == (200, None)
    assert orjson.loads(answered.body)["choices"][0]["message"]["content"] == "Echo: hello"


async def test_transport_reads_the_error_of_a_stream_with_its_retry_after(
    fake: FakeUpstream, transport: HttpTransport
) -> None:
    fake.enqueue(Fault.status(429, retry_after=7))
    endpoint = transport.endpoint(_chat_url(fake), JSON_HEADERS)

    stream = await transport.open_stream(endpoint, STREAM, 5.0)
    reply = await stream.read_error()

    assert (stream.status, reply.status, reply.retry_after_s) == (429, 429, 7.0)
    assert orjson.loads(reply.body)["error"]["code"] == "rate_limit_exceeded"


async def test_transport_stream_yields_the_sse_lines(
    fake: FakeUpstream, transport: HttpTransport, session: aiohttp.ClientSession
) -> None:
    fake.default = Behavior(chunks=5)
    endpoint = transport.endpoint(_chat_url(fake), JSON_HEADERS)

    stream = await transport.open_stream(endpoint, STREAM, 5.0)
    lines = [line async for batch in stream.line_batches() for line in batch]
    stream.close()
    oracle = await via_aiohttp(session, _chat_url(fake), STREAM, streaming=True)

    assert stream.status == 200
    assert sum(line.startswith(b"data: ") for line in lines) == 8  # role, 5 texts, stop, DONE
    assert lines[-2:] == [b"data: [DONE]", b""]
    assert [_stable(line) for line in lines] == [
        _stable(line) for line in oracle.body.split(b"\n")[:-1]
    ]


async def test_transport_stream_joins_lines_split_across_reads(transport: HttpTransport) -> None:
    async def in_pieces(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"data: one\r", b"\ndata: t", b"wo\n\n", b"data: three"):
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.01)  # each piece its own network read
        writer.write(b"0\r\n\r\n")

    async with RawUpstream(in_pieces) as server:
        stream = await transport.open_stream(transport.endpoint(server.url, {}), b"{}", 5.0)
        batches = [batch async for batch in stream.line_batches()]

    assert [line for batch in batches for line in batch] == [
        b"data: one",
        b"data: two",
        b"",
        b"data: three",
    ]


async def test_transport_stream_that_stalls_times_out(
    fake: FakeUpstream, transport: HttpTransport
) -> None:
    fake.enqueue(Fault.slow_stream(2.0))
    endpoint = transport.endpoint(_chat_url(fake), JSON_HEADERS)

    stream = await transport.open_stream(endpoint, STREAM, TIMEOUT_S)
    lines: list[bytes] = []
    with pytest.raises(UpstreamError) as caught:
        async for batch in stream.line_batches():
            lines.extend(batch)
    stream.close()

    assert caught.value.kind == "timeout"
    assert lines[0].startswith(b"data: {")


async def test_transport_reads_a_large_error_body_of_a_stream(
    transport: HttpTransport, session: aiohttp.ClientSession
) -> None:
    page = b"<html>" + b"e" * 1_000_000 + b"</html>"
    bad_gateway = response(page, status=b"502 Bad Gateway", headers=b"Content-Type: text/html\r\n")
    async with RawUpstream(default=send(bad_gateway)) as server:
        oracle = await via_aiohttp(session, server.url, b"{}", streaming=True)
        stream = await transport.open_stream(transport.endpoint(server.url, {}), b"{}", TIMEOUT_S)
        reply = await stream.read_error()

    assert (oracle.status, oracle.body) == (502, page)
    assert (reply.status, len(reply.body)) == (502, len(page))
