"""The machinery behind `ConcurrencyLimit` and `AdaptiveConcurrencyLimit`: permits and waiters.

Here, the callers' side (entering, waiting, leaving, statistics); in `resilient._limit_queue`,
the state and what is decided under the lock (who waits, who gets a permit, who is refused).

How it works, and why:

- **Fast path, no lock.** Free permits are tokens in a `collections.deque`; taking one is
  `deque.pop()` and giving it back is `deque.append()`, each atomic (the deque's own C-level
  critical section). Measured, a `threading.Lock` taken twice per call costs more than the whole
  `asyncio.Semaphore` (benchmarks/concurrency.py). No anyio primitive, no checkpoint, no sink call:
  an async caller that finds a free permit does not yield, exactly like `asyncio.Semaphore`.
  Precisely: entry is lock-free for both limits, and so is release for `ConcurrencyLimit` (it
  takes the lock only when callers wait). `AdaptiveConcurrencyLimit` takes the lock once on
  every release: the call's latency joins the window's sums, and a window's end may move the limit.
- **Slow path, one lock.** Waiters, statistics of the slow path and limit changes live under a
  `threading.Lock`. A caller that finds no permit (or finds others already waiting: no barging)
  joins a bounded queue for at most `max_wait`, or is rejected at once when the queue is full.
  With `standing_wait`, a queue that has not been empty for `max_wait` is a standing one
  (CoDel's test: arrivals outpace the permits, so waiting only adds latency), and newcomers
  wait at most `standing_wait` until it has emptied once.
- **No lost wake-up.** A releaser appends its permit *then* looks for waiters; a waiter registers
  *then* (under the lock) looks for permits. Whatever the interleaving, one of the two sees the
  other, so a permit never sits free while a waiter sleeps.
- **Hand-off.** Under the lock, free permits go straight to the next live waiter (FIFO or LIFO),
  which owns it from that instant: ownership is the waiter's state under the lock, never whether
  its wake-up has been delivered. A waiter cancelled or timed out in the same instant it was
  granted sees `GRANTED` and passes the permit on. No permit leaks, whatever is cancelled where.
  A waiter whose budget has run out is never granted one, even if its own timer (late on a busy
  loop) has not fired yet: the release marks it `EXPIRED`, out of the queue, and wakes it to
  time out.
- **Waking any caller from any thread.** A waiter's event (a `threading.Event`, an asyncio future,
  an `anyio.Event`: `resilient._waiting`, which also times the waits) is set directly when the
  release runs on the waiter's own thread, else through its loop's thread-safe entry
  (`loop.call_soon_threadsafe` / `TrioToken.run_sync_soon`). So one instance serves asyncio,
  trio and threads at once.
- **Time** is read from the injected clock, so tests expire waits by moving fake time.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import threading
from typing import TYPE_CHECKING, TypeVar

import anyio

from resilient._errors import ConcurrencyLimitError, fast_rejection
from resilient._eventloop import native_loop, on_event_loop, thread_safe_entry
from resilient._limit_parts import (
    GONE,
    GRANTED,
    WAITING,
    ConcurrencyLimitStatistics,
    Waiter,
)
from resilient._limit_queue import LimitQueue
from resilient._waiting import FutureEvent, wait_anyio, wait_asyncio, wait_thread
from resilient._wrap import Policy
from resilient.metrics._catalog import (
    CONCURRENCY_LIMIT_ACTIVE,
    CONCURRENCY_LIMIT_LIMIT,
    CONCURRENCY_LIMIT_QUEUED,
    CONCURRENCY_LIMIT_WAIT,
)
from resilient.metrics._sink import Measurement


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from resilient._limit_parts import Order


__all__ = ["ALPHA", "LimitCore", "smooth"]

TokenT = TypeVar("TokenT")

# Weight of a new sample in the smoothed hold and wait times behind `retry_after`.
ALPHA = 0.1


def smooth(smoothed: float, sample: float) -> float:
    """Fold *sample* into the moving average *smoothed* (negative: no sample yet)."""
    return sample if smoothed < 0 else smoothed + (sample - smoothed) * ALPHA


class LimitCore(LimitQueue, Policy[TokenT]):
    """The callers' side of a limit: entering, waiting, leaving, and what it reports.

    The state and the decisions under the lock are `LimitQueue`'s; subclasses add the Policy
    hooks.
    """

    __slots__ = ()

    # --- public -------------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """The number of permits now."""
        return self._limit

    @property
    def max_waiting(self) -> int | None:
        """The size of the wait queue (`None`: as many as the current limit).

        The queue in effect, which is not always the `max_waiting` passed: with `max_wait=0` (never
        wait) it is `0`, whatever `max_waiting` was. With `order="adaptive"` the queue is also
        cut, while overloaded, to a tenth of the limit (at least 1, at most this).
        """
        return self._max_waiting

    @property
    def max_wait(self) -> float | None:
        """How long a caller may wait for a permit, in seconds (`None`: no time bound)."""
        return self._max_wait

    @property
    def standing_wait(self) -> float | None:
        """How long a caller waits while the queue stands (`None`: always `max_wait`)."""
        return self._standing_wait

    @property
    def order(self) -> Order:
        """`"fifo"`, `"lifo"` or `"adaptive"`: which waiter a released permit goes to."""
        return "lifo" if self._lifo else "fifo" if self._overload is None else "adaptive"

    def statistics(self) -> ConcurrencyLimitStatistics:
        """Return a snapshot of the counters (exact when no call is entering or leaving)."""
        with self._lock:
            limit = self._limit
            active = limit + self._debt - len(self._permits)
            return ConcurrencyLimitStatistics(
                limit=limit,
                active=active,
                waiting=self._queued,
                admitted=self._admitted_locked(),
                rejected=self._rejected,
                timed_out=self._timed_out,
                cancelled=self._cancelled,
                max_active=max(self._max_active_locked(), active),
            )

    # --- acquiring ------------------------------------------------------------------------------

    def _take_slow(self) -> float:
        """Sync slow path: wait (blocking the thread) or raise; return the admission time."""
        if on_event_loop():
            # A sync caller on an event-loop thread must not block: the permits it waits for may
            # be held by tasks of this very loop.
            with self._lock:
                retry_after = self._turn_away_locked()
            raise self._reject(retry_after)
        self._check_queue()  # a full queue rejects before a waiter and its event are built
        event = threading.Event()
        now = self._clock.now()
        budget = self._wait_budget(now)
        waiter = Waiter(event, None, now, budget)
        if self._enqueue(waiter):
            return waiter.since
        try:
            wait_thread(event, waiter.since, budget, self._clock, native=self._native_timeouts)
        except BaseException:  # KeyboardInterrupt in the main thread
            self._leave(waiter)
            raise
        return self._settle(waiter)

    def _wait_budget(self, now: float) -> float | None:
        """How long a caller queued at *now* may wait: `max_wait`, or less while a queue stands."""
        standing, max_wait = self._standing_wait, self._max_wait
        if standing is None or max_wait is None or now - self._empty_at < max_wait:
            return max_wait
        return standing

    def _check_queue(self) -> None:
        """Async pre-check: raise at once, without building a waiter, if the queue is full."""
        lock = self._lock
        lock.acquire()
        try:  # a clock that raises must not leave the lock held
            if self._queued < self._capacity_locked():
                if not self._queued and self._standing_wait is not None:
                    self._empty_at = self._clock.now()  # the queue is empty: no standing queue
                return
            retry_after = self._turn_away_locked()
        finally:
            lock.release()
        raise self._reject(retry_after)

    async def _take_async(self) -> float:
        """Async slow path: wait for a permit or raise; return the admission time."""
        loop, now = asyncio._get_running_loop(), self._clock.now()
        budget = self._wait_budget(now)
        wait: Callable[[float | None], Awaitable[None]]
        if loop is not None and self._native_timeouts:  # the cheap path: resilient._waiting
            future = FutureEvent(loop.create_future())
            waiter = Waiter(future, loop.call_soon_threadsafe, now, budget)
            wait = functools.partial(wait_asyncio, future, loop)
        else:
            event = anyio.Event()
            waiter = Waiter(event, thread_safe_entry(native_loop()), now, budget)
            wait = functools.partial(wait_anyio, event, self._clock, native=self._native_timeouts)
        if self._enqueue(waiter):
            return waiter.since
        try:
            await wait(budget)
        except BaseException:
            self._leave(waiter)
            raise
        return self._settle(waiter)

    @abc.abstractmethod
    def _max_active_locked(self) -> int:
        """The highest `active` since creation, as far as the subclass's high-water marks know."""

    def _settle(self, waiter: Waiter) -> float:
        """Finish a wait that ended without an exception: admitted, or timed out."""
        now = self._clock.now()
        waited = now - waiter.since
        retry_after = None
        with self._lock:
            if waiter.state == GRANTED:
                self._admitted_now_locked()
                self._wait = smooth(self._wait, waited)
                result = "admitted"
            else:
                if waiter.state == WAITING:  # not EXPIRED: counted when it left the queue
                    self._queued -= 1
                    self._turned_away += 1
                # No overload check: out of the queue and turned away, the same excess as before.
                waiter.state = GONE
                self._timed_out += 1
                result = "timeout"
                retry_after = self._retry_after_locked()
        self._emit(CONCURRENCY_LIMIT_WAIT, waited, self._attributes(result=result))
        if result == "timeout":
            raise fast_rejection(ConcurrencyLimitError, self.name, retry_after)
        return now

    def _leave(self, waiter: Waiter) -> None:
        """The waiter's caller went away: leave the queue, or pass on a permit just granted."""
        with self._lock:
            if waiter.state == GRANTED:
                self._permits.append(None)
                self._dispatch_locked()
            else:
                if waiter.state == WAITING:
                    self._queued -= 1
                waiter.state = GONE
            self._cancelled += 1
        waited = self._clock.now() - waiter.since
        self._emit(CONCURRENCY_LIMIT_WAIT, waited, self._attributes(result="cancelled"))

    # --- metrics ------------------------------------------------------------------------------

    def _observe(self) -> Iterable[Measurement]:
        stats = self.statistics()
        attributes = self._attributes()
        return (
            Measurement(CONCURRENCY_LIMIT_ACTIVE, stats.active, attributes),
            Measurement(CONCURRENCY_LIMIT_QUEUED, stats.waiting, attributes),
            Measurement(CONCURRENCY_LIMIT_LIMIT, stats.limit, attributes),
        )
