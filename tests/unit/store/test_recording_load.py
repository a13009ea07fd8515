"""When the recording process counts itself behind (and writes flat out instead of in
slices with pauses)."""

from __future__ import annotations

import pytest

from keel.store import writer_process
from keel.store.writer_process import _Load


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(writer_process.time, "monotonic", fake)
    return fake


def test_a_trickle_with_time_to_spare_is_not_behind(clock: Clock) -> None:
    load = _Load()
    for _ in range(10):  # 1,000 spans a second, waiting for input 90% of the time
        load.arrived(100)
        clock.now += 0.01
        load.waited(0.09)
        clock.now += 0.09
    assert not load.is_behind()


def test_a_fast_stream_is_behind_even_while_the_pauses_keep_it_looking_idle(
    clock: Clock,
) -> None:
    load = _Load()
    for _ in range(6):  # 10,000 spans a second, half the time waiting
        load.arrived(1000)
        clock.now += 0.05
        load.waited(0.05)
        clock.now += 0.05
    assert load.is_behind()


def test_working_all_the_time_is_behind_and_a_quiet_window_clears_it(clock: Clock) -> None:
    load = _Load()
    for _ in range(6):  # slow spans: few, but no time left to wait
        load.arrived(10)
        clock.now += 0.1
        load.waited(0.0)
    assert load.is_behind()
    clock.now += 1.0
    load.waited(1.0)
    assert not load.is_behind()
