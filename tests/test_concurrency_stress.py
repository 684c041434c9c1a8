"""Randomized stress: thousands of tasks and threads on one limit, cancelled and timed out.

Asyncio tasks, trio tasks (the `anyio_backend` under test, plus the *other* backend running in a
thread) and plain threads share one `ConcurrencyLimit`. Whatever happens, at the end nothing is
active or queued, every attempt is counted exactly once, and the cap was never exceeded inside the
protected code.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

import anyio
import anyio.lowlevel
import pytest
import trio

from resilient import AdaptiveConcurrencyLimit, ConcurrencyLimit, ConcurrencyLimitError


Limit = ConcurrencyLimit | AdaptiveConcurrencyLimit


class Tracker:
    """Counts entries and the peak concurrency inside the protected code."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.peak = 0
        self.entries = 0
        self.attempts = 0
        self.outcomes: dict[str, int] = {}

    def enter(self) -> None:
        with self.lock:
            self.inside += 1
            self.entries += 1
            self.peak = max(self.peak, self.inside)

    def exit(self) -> None:
        with self.lock:
            self.inside -= 1

    def attempt(self, outcome: str) -> None:
        with self.lock:
            self.attempts += 1
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


async def _async_caller(limit: Limit, tracker: Tracker, rng: random.Random) -> None:
    hold = rng.choice((0, 0, 0.0005, 0.001, 0.002))
    deadline = rng.choice((None, None, 0.0005, 0.002, 0.01))
    use_cm = rng.random() < 0.5

    @limit
    async def body() -> None:
        tracker.enter()
        try:
            await anyio.sleep(hold)
        finally:
            tracker.exit()

    async def call() -> None:
        if use_cm:
            async with limit:
                tracker.enter()
                try:
                    await anyio.sleep(hold)
                finally:
                    tracker.exit()
        else:
            await body()

    outcome = "cancelled"
    try:
        with anyio.move_on_after(deadline if deadline is not None else 60):
            try:
                await call()
            except ConcurrencyLimitError:
                outcome = "rejected"
            else:
                outcome = "ok"
    finally:  # also when cancelled from outside
        tracker.attempt(outcome)


def _thread_caller(limit: Limit, tracker: Tracker, seed: int, calls: int) -> None:
    rng = random.Random(seed)

    @limit
    def body(hold: float) -> None:
        tracker.enter()
        try:
            time.sleep(hold)
        finally:
            tracker.exit()

    for _ in range(calls):
        hold = rng.choice((0, 0.0002, 0.001))
        try:
            if rng.random() < 0.5:
                body(hold)
            else:
                with limit:
                    tracker.enter()
                    time.sleep(hold)
                    tracker.exit()
        except ConcurrencyLimitError:
            tracker.attempt("rejected")
        else:
            tracker.attempt("ok")


def _foreign_loop(backend: str, limit: Limit, tracker: Tracker, seed: int, n: int) -> None:
    """Run *n* callers on the other event loop library, in this (worker) thread."""

    async def main() -> None:
        rng = random.Random(seed)
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(_async_caller, limit, tracker, random.Random(rng.random()))
                if rng.random() < 0.1:
                    await anyio.lowlevel.checkpoint()

    if backend == "trio":
        trio.run(main)
    else:
        asyncio.run(main())


def _make(kind: str, order: str, rng: random.Random) -> tuple[Limit, int]:
    max_wait = rng.choice((0.003, 0.02))
    # Half the runs with a standing-queue wait: waits of two lengths in one queue.
    standing = rng.choice((None, 0.001))
    if kind == "static":
        limit = ConcurrencyLimit(
            6,
            max_waiting=40,
            max_wait=max_wait,
            standing_wait=standing,
            order=order,  # type: ignore[arg-type]
        )
        return limit, 6
    # Tiny windows: the limit moves all the time (and permits are retired while held).
    limit = AdaptiveConcurrencyLimit(
        initial_limit=4,
        min_limit=2,
        max_limit=8,
        window=0.002,
        min_samples=3,
        max_waiting=40,
        max_wait=max_wait,
        standing_wait=standing,
        order=order,  # type: ignore[arg-type]
    )
    return limit, 8


@pytest.mark.anyio
@pytest.mark.parametrize("order", ["fifo", "lifo"])
@pytest.mark.parametrize("kind", ["static", "adaptive"])
async def test_random_tasks_threads_and_two_loops(
    anyio_backend: str, kind: str, order: str
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    limit, cap = _make(kind, order, rng)
    tracker = Tracker()
    other = "trio" if anyio_backend == "asyncio" else "asyncio"
    threads = anyio.CapacityLimiter(8)

    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: anyio.to_thread.run_sync(
                _foreign_loop, other, limit, tracker, seed + 1, 600, limiter=threads
            )
        )
        for i in range(4):
            tg.start_soon(
                lambda i=i: anyio.to_thread.run_sync(
                    _thread_caller, limit, tracker, seed + 2 + i, 60, limiter=threads
                )
            )
        for _ in range(1500):
            tg.start_soon(_async_caller, limit, tracker, random.Random(rng.random()))
            if rng.random() < 0.05:
                await anyio.sleep(rng.choice((0, 0.0005)))
        # Random outside cancellation of a batch, to hit "granted and cancelled at once".
        async with anyio.create_task_group() as doomed:
            for _ in range(200):
                doomed.start_soon(_async_caller, limit, tracker, random.Random(rng.random()))
            await anyio.sleep(0.001)
            doomed.cancel_scope.cancel()

    stats = limit.statistics()
    context = f"seed={seed} stats={stats} outcomes={tracker.outcomes}"
    assert stats.active == 0, context
    assert stats.waiting == 0, context
    assert tracker.inside == 0, context
    assert tracker.peak <= cap, context
    assert stats.max_active <= cap, context
    assert (
        stats.admitted + stats.rejected + stats.timed_out + stats.cancelled == tracker.attempts
    ), context
    assert stats.admitted == tracker.entries, context
    assert tracker.outcomes.get("rejected", 0) == stats.rejected + stats.timed_out, context
    assert len(limit._permits) == limit.limit, context
    assert limit._debt == 0, context
    assert stats.admitted > 0, context
