"""A concurrency limit's permits and wait queue: who gets a permit, who waits, who is refused.

`LimitQueue` holds the state of `resilient._limit.LimitCore` and makes the decisions that need
the lock: joining the queue or being turned away when it is full (`_enqueue`), how long the
queue may be (the adaptive order cuts it while overloaded: `resilient._overload`), and which
waiter a released permit goes to (`_dispatch_locked`). Two quick refusals stay with the callers
in `LimitCore`: the async pre-check of a full queue, and a sync caller on an event loop. How the
pieces fit, and why, is in `resilient._limit`'s docstring.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from typing import TYPE_CHECKING

from resilient._clock import SystemClock, system_clock
from resilient._counting import count_value as _count_value
from resilient._errors import ConcurrencyLimitError, fast_rejection
from resilient._limit_parts import EXPIRED, GONE, GRANTED, WAITING, Waiter, check_options
from resilient._overload import OVERLOAD_QUEUE, OVERLOAD_WINDOW, OverloadGauge
from resilient.metrics._catalog import CONCURRENCY_LIMIT_WAIT, NAME
from resilient.metrics._sink import Instrumented


if TYPE_CHECKING:
    from collections.abc import Callable

    from resilient._clock import Clock
    from resilient._limit_parts import Order
    from resilient.metrics._sink import MetricsSink


__all__ = ["LimitQueue"]


class LimitQueue(Instrumented):
    """The state of a limit, and its decisions under the lock; `LimitCore` adds the callers."""

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
        self._limit: int = limit
        self._permits: deque[None] = deque([None] * limit)
        self._debt: int = 0  # permits to retire as they come back, after the limit fell
        self._queue: deque[Waiter] = deque()
        self._queued: int = 0  # live waiters; the deque may also hold GONE ones, dropped lazily
        # max_wait=0 means "never wait": the same as an empty queue.
        self._max_waiting = 0 if max_wait == 0 else max_waiting
        self._max_wait = None if max_wait is None else float(max_wait)
        self._lifo = order == "lifo"
        self._clock = system_clock if clock is None else clock
        # Only the adaptive order asks whether the limit is overloaded.
        self._overload = OverloadGauge(self._clock.now()) if order == "adaptive" else None
        self._native_timeouts = isinstance(self._clock, SystemClock)
        self._standing_wait = None if standing_wait is None else float(standing_wait)
        self._empty_at: float = self._clock.now()  # when a slow-path caller last found no queue
        self._hold: float = -1.0  # smoothed hold time; negative until known
        self._wait: float = -1.0  # smoothed wait of admitted waiters; negative until known
        self._admits = itertools.count()  # fast-path admissions: next() is atomic
        self._slow_admits: int = 0
        self._rejected: int = 0
        self._timed_out: int = 0
        # Callers turned away (rejected, or out of the queue with no permit), counted the moment
        # it is decided, not when their task gets to it: what an adaptive order's gauge reads.
        self._turned_away: int = 0
        self._cancelled: int = 0
        self._max_active: int = 0  # most calls in flight seen (the adaptive limit's: per window)

    # --- joining the queue --------------------------------------------------------------------

    def _capacity_locked(self) -> int:
        if self._overload is not None and self._overloaded_locked(self._clock.now()):
            return self._short_queue_locked()
        return self._limit if self._max_waiting is None else self._max_waiting

    def _short_queue_locked(self) -> int:
        """The queue's length while overloaded: a tenth of the limit, at least 1.

        Under sustained overload waiting only adds latency: just enough waiters to take permits
        as they come back, and the rest turned away at once (cheaply).
        """
        capacity = self._limit if self._max_waiting is None else self._max_waiting
        return min(capacity, max(1, self._limit // OVERLOAD_QUEUE))

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
            retry_after = self._turn_away_locked()
        # The sink is called without the lock: it may read statistics() (not reentrant).
        raise self._reject(retry_after)

    def _turn_away_locked(self) -> float | None:
        """Count a caller refused at once; return the `Retry-After` to give it."""
        self._rejected += 1
        self._turned_away += 1
        self._check_overload_locked()
        return self._retry_after_locked()

    def _check_overload_locked(self) -> None:
        """The queue grew or turned a caller away: an adaptive order may be overloaded now."""
        gauge = self._overload
        if gauge is not None and not gauge.overloaded:
            now, turned_away = self._clock.now(), self._turned_away
            if gauge.check(now, self._admitted_locked(), turned_away, self._queued):
                self._trim_locked()

    def _trim_locked(self) -> None:
        """Overload began: cut the queue to its overload length, the oldest waiters first.

        They would wait longest for nothing: newest first, they are served last, if ever. Each
        is woken to time out now, rather than at the end of its wait.
        """
        queue, keep = self._queue, self._short_queue_locked()
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

    # --- refusing -------------------------------------------------------------------------------

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
