"""The machinery behind `ConcurrencyLimit` and `AdaptiveConcurrencyLimit`: permits and waiters.

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
import itertools
import threading
from collections import deque
from typing import TYPE_CHECKING, TypeVar

import anyio

from resilient._clock import SystemClock, system_clock
from resilient._counting import count_value as _count_value
from resilient._errors import ConcurrencyLimitError, fast_rejection
from resilient._eventloop import native_loop, on_event_loop, thread_safe_entry
from resilient._limit_parts import (
    EXPIRED,
    GONE,
    GRANTED,
    WAITING,
    ConcurrencyLimitStatistics,
    Waiter,
    check_options,
)
from resilient._overload import OVERLOAD_QUEUE, OVERLOAD_WINDOW, OverloadGauge
from resilient._waiting import FutureEvent, wait_anyio, wait_asyncio, wait_thread
from resilient._wrap import Policy
from resilient.metrics._catalog import (
    CONCURRENCY_LIMIT_ACTIVE,
    CONCURRENCY_LIMIT_LIMIT,
    CONCURRENCY_LIMIT_QUEUED,
    CONCURRENCY_LIMIT_WAIT,
    NAME,
)
from resilient.metrics._sink import Instrumented, Measurement


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from resilient._clock import Clock
    from resilient._limit_parts import Order
    from resilient.metrics._sink import MetricsSink


__all__ = ["ALPHA", "LimitCore", "smooth"]

TokenT = TypeVar("TokenT")

# Weight of a new sample in the smoothed hold and wait times behind `retry_after`.
ALPHA = 0.1


def smooth(smoothed: float, sample: float) -> float:
    """Fold *sample* into the moving average *smoothed* (negative: no sample yet)."""
    return sample if smoothed < 0 else smoothed + (sample - smoothed) * ALPHA


class LimitCore(Policy[TokenT], Instrumented):
    """Permits, the wait queue, statistics and metrics; subclasses add the Policy hooks."""

    __slots__ = (
        "_admits",
        "_cancelled",
        "_clock",
        "_debt",
        "_empty_at",
        "_hold",
        "_lifo",
        "_limit",
        "_lock",
        "_max_active",
        "_max_wait",
        "_max_waiting",
        "_native_timeouts",
        "_overload",
        "_permits",
        "_queue",
        "_queued",
        "_rejected",
        "_rejected_attributes",
        "_slow_admits",
        "_standing_wait",
        "_timed_out",
        "_turned_away",
        "_wait",
    )

    def __init__(
        self,
        limit: int,
        *,
        max_waiting: int | None,
        max_wait: float | None,
        order: Order,
        name: str | None,
        sink: MetricsSink | None,
        clock: Clock | None,
        standing_wait: float | None = None,
    ) -> None:
        check_options(max_waiting, max_wait, standing_wait, order, clock)
        Instrumented.__init__(self, name, sink)
        self._rejected_attributes = self._attributes(result="rejected")  # built once: a hot path
        self._lock = threading.Lock()
        self._limit = limit
        self._permits: deque[None] = deque([None] * limit)
        self._debt = 0  # permits to retire as they come back, after the limit fell
        self._queue: deque[Waiter] = deque()
        self._queued = 0  # live waiters; the deque may also hold GONE ones, dropped lazily
        # max_wait=0 means "never wait": the same as an empty queue.
        self._max_waiting = 0 if max_wait == 0 else max_waiting
        self._max_wait = None if max_wait is None else float(max_wait)
        self._lifo = order == "lifo"
        self._clock = system_clock if clock is None else clock
        # Only the adaptive order asks whether the limit is overloaded.
        self._overload = OverloadGauge(self._clock.now()) if order == "adaptive" else None
        self._native_timeouts = isinstance(self._clock, SystemClock)
        self._standing_wait = None if standing_wait is None else float(standing_wait)
        self._empty_at = self._clock.now()  # when a slow-path caller last found no queue
        self._hold = -1.0  # smoothed hold time; negative until known
        self._wait = -1.0  # smoothed wait of admitted waiters; negative until known
        self._admits = itertools.count()  # fast-path admissions: next() is atomic
        self._slow_admits = 0
        self._rejected = 0
        self._timed_out = 0
        # Callers turned away (rejected, or out of the queue with no permit), counted the moment
        # it is decided, not when their task gets to it: what an adaptive order's gauge reads.
        self._turned_away = 0
        self._cancelled = 0
        self._max_active = 0  # most calls in flight seen (the adaptive limit's: per window)

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
                self._rejected += 1
                self._turned_away += 1
                retry_after = self._retry_after_locked()
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
            retry_after = self._overflowed_locked()
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

    def _capacity_locked(self) -> int:
        capacity = self._limit if self._max_waiting is None else self._max_waiting
        if self._overload is not None and self._overloaded_locked(self._clock.now()):
            # Under sustained overload waiting only adds latency: keep just enough waiters to
            # take permits as they come back, and turn the rest away at once (cheaply).
            return min(capacity, max(1, self._limit // OVERLOAD_QUEUE))
        return capacity

    def _overloaded_locked(self, now: float) -> bool:
        """Whether an adaptive order's limit is overloaded (`resilient._overload`)."""
        gauge = self._overload
        if gauge is None:
            return False
        if now - gauge.window_start >= OVERLOAD_WINDOW:
            turned_away = self._turned_away
            if gauge.end_window(now, self._admitted_locked(), turned_away, self._queued):
                self._trim_locked()
        return gauge.overloaded

    def _admitted_locked(self) -> int:
        return _count_value(self._admits) + self._slow_admits

    def _enqueue(self, waiter: Waiter) -> bool:
        """Take a permit at once (`True`) or queue *waiter* (`False`).

        Raises:
            ConcurrencyLimitError: the queue is full.
        """
        with self._lock:
            if not self._queued and not self._debt:
                try:
                    self._permits.pop()
                except IndexError:
                    pass
                else:
                    self._admitted_now_locked()
                    return True
            if self._queued < self._capacity_locked():
                queue = self._queue
                if len(queue) > 2 * self._queued + 16:
                    # Drop the waiters that left, so the deque stays O(live waiters).
                    self._queue = queue = deque(w for w in queue if w.state == WAITING)
                queue.append(waiter)
                self._queued += 1
                # A permit released between our failed pop and now: its releaser may have looked
                # for waiters before we registered, so look for permits now that we have.
                self._dispatch_locked()
                if waiter.state == GRANTED:
                    self._admitted_now_locked()
                    return True
                self._check_overload_locked()  # the queue grew (a trim keeps this newest one)
                return False
            retry_after = self._overflowed_locked()
        # The sink is called without the lock: it may read statistics() (not reentrant).
        raise self._reject(retry_after)

    def _overflowed_locked(self) -> float | None:
        """Count a caller turned away by a full queue; return the `Retry-After` to give it."""
        self._rejected += 1
        self._turned_away += 1
        self._check_overload_locked()
        return self._retry_after_locked()

    def _check_overload_locked(self) -> None:
        """The queue grew or turned a caller away: an adaptive order may be overloaded now."""
        gauge = self._overload
        if gauge is not None and not gauge.overloaded:
            turned_away = self._turned_away
            if gauge.check(self._admitted_locked(), turned_away, self._queued):
                self._trim_locked()

    def _trim_locked(self) -> None:
        """Overload began: cut the queue to its overload length, the oldest waiters first.

        They would wait longest for nothing: newest first, they are served last, if ever. Each
        is woken to time out now, rather than at the end of its wait.
        """
        queue, keep = self._queue, self._capacity_locked()
        while self._queued > keep and queue:
            waiter = queue.popleft()
            if waiter.state != WAITING:
                continue
            self._queued -= 1
            self._turned_away += 1
            self._wake_locked(waiter, EXPIRED)

    def _wake_locked(self, waiter: Waiter, state: int) -> bool:
        """Wake a waiter taken out of the queue, in *state*; `False` if nobody is left to wake."""
        waiter.state = state
        if waiter.wake():
            return True
        # Its event loop is gone, and its task with it: nobody will settle this waiter.
        waiter.state = GONE
        self._cancelled += 1
        return False

    def _admitted_now_locked(self) -> None:
        self._slow_admits += 1
        active = self._limit + self._debt - len(self._permits)
        if active > self._max_active:  # noqa: PLR1730 - a compare is cheaper than max()
            self._max_active = active

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

    # --- releasing ------------------------------------------------------------------------------

    def _dispatch_locked(self) -> None:
        """Retire permits owed after a limit cut, then give free permits to waiters, in order."""
        permits = self._permits
        while self._debt and permits:
            try:
                permits.pop()
            except IndexError:  # pragma: no cover - a fast-path caller took it meanwhile
                break
            self._debt -= 1
        if not (self._queued and permits):
            return
        now = self._clock.now()  # before any permit is taken: a clock that raises loses none
        # Adaptive order (Facebook's adaptive LIFO): oldest first, but newest first while
        # overloaded. Then the oldest waiters are the likeliest to be too late for their callers,
        # and serving them first would make every admitted call wait the longest.
        lifo = self._lifo or self._overloaded_locked(now)
        pop = self._queue.pop if lifo else self._queue.popleft
        while self._queued and permits:
            try:
                permits.pop()
            except IndexError:  # pragma: no cover - a fast-path caller took it meanwhile
                break
            if not self._grant_locked(pop, now):
                permits.append(None)  # nobody left to take it
                return

    def _grant_locked(self, pop: Callable[[], Waiter], now: float) -> bool:
        """Hand one permit to the next live waiter, taken by *pop*; `False` if none is left."""
        queue = self._queue
        while queue:
            waiter = pop()
            if waiter.state != WAITING:
                continue
            self._queued -= 1
            # A waiter past its deadline is woken to time out, though its own timer (late on a
            # busy loop) has not fired yet: a permit now would admit a caller past `max_wait`.
            granted = waiter.deadline > now
            if not granted:
                self._turned_away += 1
            if self._wake_locked(waiter, GRANTED if granted else EXPIRED) and granted:
                return True
            if not self._queued:
                return False
        return False  # pragma: no cover - _queued counts live waiters in the deque

    def _set_limit_locked(self, limit: int) -> None:
        """Move the limit: add permits at once, or retire them now or as they come back."""
        delta = limit - self._limit
        self._limit = limit
        permits = self._permits
        if delta > 0:
            paid = min(delta, self._debt)
            self._debt -= paid
            permits.extend([None] * (delta - paid))
        else:
            self._debt -= delta
        self._dispatch_locked()

    def _retry_after_locked(self) -> float | None:
        # Little's law: the queue ahead drains at about `limit` calls per hold time. Without a
        # hold time yet, a recent wait for a permit is the next best guess.
        ahead = self._queued + 1
        if self._hold >= 0:
            return self._hold * ahead / max(self._limit, 1)
        if self._wait >= 0:
            return self._wait
        return None

    def _reject(self, retry_after: float | None) -> ConcurrencyLimitError:
        """Report a rejection and return the error to raise.

        Call it without the lock: the sink may read `statistics()`. Rejecting is the hot path
        under overload, so nothing is built but the error, and that without its Python `__init__`.
        """
        self._emit(CONCURRENCY_LIMIT_WAIT, 0.0, self._rejected_attributes)
        return fast_rejection(ConcurrencyLimitError, self.name, retry_after)

    # --- metrics ------------------------------------------------------------------------------

    def _attributes(self, **extra: str) -> dict[str, str]:
        if self.name is not None:
            extra[NAME] = self.name
        return extra

    def _observe(self) -> Iterable[Measurement]:
        stats = self.statistics()
        attributes = self._attributes()
        return (
            Measurement(CONCURRENCY_LIMIT_ACTIVE, stats.active, attributes),
            Measurement(CONCURRENCY_LIMIT_QUEUED, stats.waiting, attributes),
            Measurement(CONCURRENCY_LIMIT_LIMIT, stats.limit, attributes),
        )
