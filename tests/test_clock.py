"""Clocks: the system clock is monotonic, the fake one moves only when told."""

from __future__ import annotations

import math
import threading

import anyio
import pytest

from resilient import Clock, SystemClock
from resilient.testing import FakeClock


def test_system_clock_is_monotonic_and_a_clock() -> None:
    clock = SystemClock()
    readings = [clock.now() for _ in range(1000)]
    assert readings == sorted(readings)
    assert isinstance(clock, Clock)
    assert repr(clock) == "SystemClock()"


@pytest.mark.anyio
async def test_system_clock_sleeps_on_both_backends() -> None:
    clock = SystemClock()
    before = clock.now()
    await clock.sleep(0.01)
    assert clock.now() - before >= 0.009


def test_fake_clock_moves_only_when_advanced(clock: FakeClock) -> None:
    assert clock.now() == 0.0
    clock.advance(1.5)
    clock.advance(0)
    assert clock.now() == 1.5
    assert isinstance(clock, Clock)
    assert repr(clock) == "FakeClock(now=1.5, autojump=True)"


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_fake_clock_refuses_to_go_back_or_to_infinity(clock: FakeClock, bad: float) -> None:
    with pytest.raises(ValueError, match="seconds must be a finite number >= 0"):
        clock.advance(bad)


@pytest.mark.parametrize("bad", [math.nan, math.inf, "0"])
def test_fake_clock_start_is_validated(bad: object) -> None:
    with pytest.raises(ValueError, match="start must be a finite number"):
        FakeClock(bad)  # type: ignore[arg-type]


def test_fake_clock_is_thread_safe() -> None:
    clock = FakeClock(10)

    def work() -> None:
        for _ in range(10_000):
            clock.advance(0.5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock.now() == 10 + 4 * 10_000 * 0.5


@pytest.mark.anyio
async def test_autojump_sleep_jumps_to_the_deadline(clock: FakeClock) -> None:
    await clock.sleep(5)
    assert clock.now() == 5.0
    await clock.sleep(0)
    await clock.sleep(-1)
    assert clock.now() == 5.0


@pytest.mark.anyio
async def test_sleep_is_a_checkpoint(clock: FakeClock) -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        await clock.sleep(1)
        pytest.fail("a cancelled sleep must not return")  # pragma: no cover
    assert scope.cancelled_caught


@pytest.mark.anyio
async def test_concurrent_autojump_sleepers_add_up(clock: FakeClock) -> None:
    async with anyio.create_task_group() as tg:
        for seconds in (3, 1, 2):
            tg.start_soon(clock.sleep, seconds)
    assert clock.now() == 6.0


@pytest.mark.anyio
async def test_manual_sleep_waits_for_advance() -> None:
    clock = FakeClock(autojump=False)
    woke: list[float] = []

    async def sleeper(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(seconds)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper, 2.0)
        tg.start_soon(sleeper, 1.0)
        await anyio.wait_all_tasks_blocked()
        assert woke == []
        clock.advance(1.0)
        await anyio.wait_all_tasks_blocked()
        assert woke == [1.0]
        clock.advance(0.5)
        await anyio.wait_all_tasks_blocked()
        assert woke == [1.0]
        clock.advance(0.5)
    assert woke == [1.0, 2.0]
    assert clock.now() == 2.0
