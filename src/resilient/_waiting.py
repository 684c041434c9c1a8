"""How a queued caller waits for its permit: a thread, an asyncio task, or any anyio task.

The limit (`resilient._limit_queue`) decides who gets a permit, under its lock; these only
wait, for at most *budget* seconds (`None`: no bound), until the waiter's event is set. Whether
the wait ended granted or timed out is the limit's to tell, from the waiter's state. Each raises
whatever interrupts it (cancellation, `KeyboardInterrupt`), for the limit to take the waiter out
of the queue.

- **Threads** block on a `threading.Event`; with a clock other than `SystemClock` (a
  `FakeClock`) they re-read it every few milliseconds.
- **asyncio tasks** with real time await a bare future under a loop timer: an anyio `Event` and
  `move_on_after` cost about 40 us more per wait, paid under overload by every caller that queues
  (docs/benchmarks.md, "Waiting for a permit"). Cancelling the task (an anyio cancel scope
  included) cancels the awaited future.
- **Other tasks** (trio, or any backend with a fake clock) wait on an anyio `Event`, timed by the
  event loop, or racing `clock.sleep()` so that tests expire waits by moving fake time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio


if TYPE_CHECKING:
    import asyncio
    import threading

    from resilient._clock import Clock


__all__ = ["FutureEvent", "wait_anyio", "wait_asyncio", "wait_thread"]

_CLOCK_POLL = 0.005  # how often a thread re-reads a non-system clock while it waits


class FutureEvent:
    """An asyncio future seen as an event: `set()` resolves it (once), from its loop's thread."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future

    def set(self) -> None:
        _wake(self.future)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def wait_thread(
    event: threading.Event, since: float, budget: float | None, clock: Clock, *, native: bool
) -> None:
    """Block until *event* is set or *budget* seconds of *clock* have passed since *since*."""
    if budget is None:
        event.wait()
        return
    deadline = since + budget
    while not event.is_set():
        left = deadline - clock.now()
        if left <= 0:
            return
        event.wait(left if native else min(left, _CLOCK_POLL))


async def wait_asyncio(
    event: FutureEvent, loop: asyncio.AbstractEventLoop, budget: float | None
) -> None:
    """Await *event*'s future, woken by a loop timer after *budget* seconds at the latest."""
    timer = None if budget is None else loop.call_later(budget, _wake, event.future)
    try:
        await event.future
    finally:
        if timer is not None:
            timer.cancel()


async def wait_anyio(
    event: anyio.Event, clock: Clock, budget: float | None, *, native: bool
) -> None:
    """Wait for *event*, for at most *budget* seconds: of the event loop, or of *clock*."""
    if budget is None:
        await event.wait()
    elif native:
        with anyio.move_on_after(budget):
            await event.wait()
    else:
        async with anyio.create_task_group() as tg:

            async def expire() -> None:
                await clock.sleep(budget)
                tg.cancel_scope.cancel()

            tg.start_soon(expire)
            await event.wait()
            tg.cancel_scope.cancel()
