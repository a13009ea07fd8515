"""`python -m keel.testing`: serve a fake upstream until Ctrl-C or SIGTERM (demo, benchmarks)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Sequence

from keel.testing.behavior import Behavior
from keel.testing.fake_upstream import FakeUpstream


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keel.testing",
        description="Serve a fake OpenAI + Anthropic upstream (see keel.testing.fake_upstream).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before answering")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between events")
    parser.add_argument("--chunks", type=int, default=4, help="pieces a streamed reply is cut in")
    parser.add_argument("--reply", default=None, help='fixed reply (default: "Echo: <user text>")')
    parser.add_argument("--api-key", default=None, help="require this key (Bearer / x-api-key)")
    return parser


async def serve(fake: FakeUpstream) -> None:
    """Run `fake` until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with fake:
        print(f"fake upstream listening on {fake.url} (OpenAI base_url {fake.url}/v1)", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and serve until stopped."""
    args = _parser().parse_args(argv)
    default = Behavior(
        latency_s=args.latency_ms / 1000,
        chunk_delay_s=args.chunk_delay_ms / 1000,
        chunks=args.chunks,
        reply=args.reply,
    )
    fake = FakeUpstream(host=args.host, port=args.port, api_key=args.api_key, default=default)
    try:
        import uvloop  # the faster loop when installed; same behaviour either way

        runner: contextlib.AbstractContextManager[asyncio.Runner] = asyncio.Runner(
            loop_factory=uvloop.new_event_loop
        )
    except ImportError:
        runner = asyncio.Runner()
    with runner as run:
        run.run(serve(fake))


if __name__ == "__main__":
    main()
