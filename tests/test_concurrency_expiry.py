"""A permit never goes to a waiter whose wait is over: adversarial tests of expiry at release.

On a busy event loop a waiter's own timer fires late; a release in between must time the waiter
out rather than admit it past its budget (`max_wait`, or `standing_wait` while the queue stands).
The fuzz test mixes tasks and threads, moves a fake clock past deadlines between releases, and
cancels at random; after every step the queue's bookkeeping must hold, and at the end every
permit must be back and every attempt counted once.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

from resilient import AdaptiveConcurrencyLimit, ConcurrencyLimit, ConcurrencyLimitError
from resilient._limit_parts import GONE, GRANTED, WAITING, Waiter
from resilient.testing import FakeClock


sys.path.insert(0, str(Path(__file__).parent))

from helpers.limits import queue_dead_waiter, settle, start_queued_thread


if TYPE_CHECKING:
    from collections.abc import Callable

    from resilient._limit import LimitCore


def check_queue(limit: LimitCore[Any]) -> None:
    """`_queued` counts exactly the live waiters, and no permit idles while one waits."""
    with limit._lock:
        live = sum(1 for waiter in limit._queue if waiter.state == WAITING)
        assert live == limit._queued >= 0
        assert not (limit._queued and limit._permits and not limit._debt)


def record_wakes(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> list[tuple[int, float, float]]:
    """Record (state, deadline, now) at every wake-up a limit sends."""
    wakes: list[tuple[int, float, float]] = []
    wake = Waiter.wake

    def recording(self: Waiter) -> bool:
        wakes.append((self.state, self.deadline, clock.now()))
        return wake(self)

    monkeypatch.setattr(Waiter, "wake", recording)
    return wakes


def make_limit(kind: str, order: str, standing: float | None, clock: FakeClock) -> Any:
    options: dict[str, Any] = {
        "max_waiting": 20,
        "max_wait": 1.0,
        "standing_wait": standing,
        "order": order,
        "clock": clock,
    }
    if kind == "static":
        return ConcurrencyLimit(3, **options)
    return AdaptiveConcurrencyLimit(
        initial_limit=3, min_limit=1, max_limit=6, window=0.5, min_samples=1, **options
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("order", ["fifo", "lifo", "adaptive"])
@pytest.mark.parametrize("kind", ["static", "adaptive"])
@pytest.mark.anyio
async def test_no_grant_past_a_deadline_and_nothing_lost(
    seed: int, order: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    clock = FakeClock(autojump=False)
    wakes = record_wakes(monkeypatch, clock)
    limit = make_limit(kind, order, rng.choice((None, 0.0, 0.3)), clock)
    outcomes = {"ok": 0, "rejected": 0, "cancelled": 0}
    lock = threading.Lock()
    inside, peak = [0], [0]

    def record(outcome: str) -> None:
        with lock:
            outcomes[outcome] += 1

    async def task(release: anyio.Event, scope: anyio.CancelScope) -> None:
        outcome = "cancelled"
        try:
            with scope:
                async with limit:
                    outcome = "ok"  # admitted: a cancellation inside does not change that
                    with lock:
                        inside[0] += 1
                        peak[0] = max(peak[0], inside[0])
                    try:
                        await release.wait()
                    finally:
                        with lock:
                            inside[0] -= 1
        except ConcurrencyLimitError:
            outcome = "rejected"
        finally:
            record(outcome)

    def thread_caller(release: threading.Event) -> None:
        try:
            with limit:
                release.wait(5)
        except ConcurrencyLimitError:
            record("rejected")
        else:
            record("ok")

    releases: list[Callable[[], object]] = []
    scopes: list[anyio.CancelScope] = []
    threads: list[threading.Thread] = []
    async with anyio.create_task_group() as tg:
        for _ in range(200):
            roll = rng.random()
            if roll < 0.35:
                event, scope = anyio.Event(), anyio.CancelScope()
                releases.append(event.set)
                scopes.append(scope)
                tg.start_soon(task, event, scope)
            elif roll < 0.42 and len(threads) < 8:
                done = threading.Event()
                releases.append(done.set)
                threads.append(threading.Thread(target=thread_caller, args=(done,)))
                threads[-1].start()
                time.sleep(0.002)  # noqa: ASYNC251 - let the thread queue; fake time stands
            elif roll < 0.66 and releases:
                releases.pop(rng.randrange(len(releases)))()
            elif roll < 0.82:
                clock.advance(rng.choice((0.1, 0.4, 0.9, 1.0, 1.5)))
            elif roll < 0.92 and scopes:
                scopes.pop(rng.randrange(len(scopes))).cancel()
            elif releases:  # a release right after the deadlines pass, before anyone runs
                clock.advance(rng.choice((1.0, 2.0)))
                releases.pop(rng.randrange(len(releases)))()
            await settle(rng.choice((0, 1, 5, 30)))
            check_queue(limit)
        for _ in range(200):  # wind down: release everything, let every wait run out
            clock.advance(2.0)
            for release in releases:
                release()
            await settle(5)
            time.sleep(0.001)  # noqa: ASYNC251 - threads poll the fake clock every 5 ms
            if limit.statistics().waiting == 0 and not any(t.is_alive() for t in threads):
                break
    for thread in threads:
        thread.join(5)
    stats = limit.statistics()
    check_queue(limit)
    assert (stats.active, stats.waiting, limit._debt) == (0, 0, 0)
    assert len(limit._permits) == limit.limit
    attempts = sum(outcomes.values())
    assert stats.admitted + stats.rejected + stats.timed_out + stats.cancelled == attempts
    assert (stats.admitted, stats.cancelled) == (outcomes["ok"], outcomes["cancelled"])
    assert stats.rejected + stats.timed_out == outcomes["rejected"]
    assert peak[0] <= limit.max_limit if kind == "adaptive" else peak[0] <= 3
    late = [wake for wake in wakes if wake[0] == GRANTED and wake[1] <= wake[2]]
    assert not late, late[:3]


def test_a_dead_or_expired_waiter_is_skipped_for_a_live_one() -> None:
    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(1, max_waiting=5, max_wait=1.0, clock=clock)
    limit.__enter__()
    expired_and_dead = queue_dead_waiter(limit, 0.0, 1.0)
    dead = queue_dead_waiter(limit, 0.0, None)
    admitted: list[int] = []

    def live() -> None:
        with limit:
            admitted.append(1)

    clock.advance(0.5)
    thread = start_queued_thread(limit, live, waiting=3)
    clock.advance(0.6)  # past the first one's deadline (1.0), not the live one's (1.5)
    limit.__exit__(None, None, None)
    thread.join(5)
    stats = limit.statistics()
    assert admitted == [1]
    assert (stats.cancelled, stats.timed_out, stats.admitted, stats.waiting, stats.active) == (
        2,
        0,
        2,
        0,
        0,
    )
    assert expired_and_dead.state == dead.state == GONE


def test_a_thread_waiter_expired_at_release_times_out_and_the_permit_stays_free() -> None:
    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(1, max_wait=1.0, clock=clock)
    limit.__enter__()
    outcome: list[str] = []

    def waiter() -> None:
        try:
            with limit:
                outcome.append("admitted")  # pragma: no cover - the fix under test forbids it
        except ConcurrencyLimitError:
            outcome.append("timeout")

    thread = start_queued_thread(limit, waiter, waiting=1)
    with limit._lock:  # move time and release before the thread can look at the clock
        clock._time += 1.5
    limit.__exit__(None, None, None)
    assert limit.statistics().active == 0
    thread.join(5)
    assert outcome == ["timeout"]
    stats = limit.statistics()
    assert (stats.timed_out, stats.admitted, stats.waiting, stats.active) == (1, 1, 0, 0)


@pytest.mark.anyio
async def test_a_limit_cut_with_expired_waiters_returns_every_permit() -> None:
    clock = FakeClock(autojump=False)
    limit = AdaptiveConcurrencyLimit(
        initial_limit=4, min_limit=1, max_limit=8, window=0.5, min_samples=1, max_waiting=10,
        max_wait=1.0, clock=clock,
    )  # fmt: skip
    tokens = [limit._enter() for _ in range(4)]

    async def waiter() -> None:
        try:
            async with limit:
                pass  # pragma: no cover - every waiter is past its deadline at the releases
        except ConcurrencyLimitError:
            pass

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(waiter)
        await settle(10)
        assert limit.statistics().waiting == 5
        with limit._lock:
            limit._set_limit_locked(1)  # three permits owed
        clock.advance(1.5)
        for token in tokens:
            limit._exit_ok(token, None)
        await settle()
        clock.advance(5)
    stats = limit.statistics()
    assert (stats.active, stats.waiting, stats.timed_out, limit._debt) == (0, 0, 5, 0)
    assert len(limit._permits) == limit.limit
