"""SDK fixtures: a recording Keel server, and an SDK pointed at it that is shut down after.

Every test gets a clean slate: no `KEEL_*` variables from the outer environment,
no default client left over from another test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import keel.sdk
from keel.sdk import Client
from tests.unit.sdk.collector import Collector

Configure = Callable[..., Client]


@pytest.fixture(autouse=True)
def _clean_sdk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("KEEL_"):
            monkeypatch.delenv(name)
    keel.sdk.shutdown(0)
    yield
    keel.sdk.shutdown(1.0)


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    yield server
    server.close()


@pytest.fixture
def configure(collector: Collector) -> Configure:
    """`keel.configure` aimed at the collector with test-friendly timings; overrides win."""

    def make(**overrides: Any) -> Client:
        settings: dict[str, Any] = {
            "host": collector.url,
            "flush_interval_s": 60.0,  # only flush() and full batches send: no timing races
            "backoff_s": 0.01,
            "shutdown_timeout_s": 1.0,
        }
        settings.update(overrides)
        return keel.configure(**settings)

    return make


@pytest.fixture
def sdk(configure: Configure) -> Client:
    """The default SDK client, recording everything, sending on flush()."""
    return configure()
