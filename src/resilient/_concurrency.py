"""`ConcurrencyLimit`: an upper bound on calls in flight, with a short, bounded wait.

The permits and the wait queue live in `resilient._limit_queue`, the callers' side and the
statistics in `resilient._limit` (both shared with the adaptive limit); this module adds the
hot paths of a fixed limit.
"""

from __future__ import annotations

import functools
from collections import deque
from typing import TYPE_CHECKING, Any, TypeVar

from typing_extensions import override

from resilient._limit import LimitCore, smooth
from resilient._validate import at_least
from resilient._wrap import MUST_WAIT


if TYPE_CHECKING:
    import types
    from collections.abc import Callable

    from typing_extensions import Self

    from resilient._clock import Clock
    from resilient._limit_parts import Order
    from resilient.metrics._sink import MetricsSink


__all__ = ["ConcurrencyLimit"]


# What a `with` block passes to `_exit_ok` for a token: it has none of its own.
_BLOCK: Any = object()

MissT = TypeVar("MissT", bound="Callable[[ConcurrencyLimit], float | None]")


def _fast_path_first(miss: MissT) -> MissT:
    """Put the lock-free fast path in front of an entry hook, whose body handles a miss.

    The fast path is written once, here, for both `_enter` and `_enter_nowait`. A helper method
    called by both would cost every admission one more Python call: measured, about 30 ns of a
    210 ns sync call (benchmarks/concurrency.py).
    """

    def enter(self: ConcurrencyLimit) -> float | None:
        if not self._queued:  # others waiting: no barging, queue behind them
            permits = self._permits
            try:
                permits.pop()
            except IndexError:
                pass
            else:
                next(self._admits)
                free = len(permits)
                if free < self._min_free:  # noqa: PLR1730 - a compare is cheaper than min()
                    self._min_free = free
                return self._clock.now() if free <= self._busy_free else None
        return miss(self)

    return functools.update_wrapper(enter, miss)  # type: ignore[return-value]


class ConcurrencyLimit(LimitCore["float | None"]):
    """At most `max_concurrent` calls in flight; a few more may wait briefly for a permit.

    A decorator (sync and async functions) and a context manager (`with`, `async with`). One
    instance may be shared by asyncio tasks, trio tasks and threads at once.

    ```python
    limit = ConcurrencyLimit(10, max_waiting=20, max_wait=0.5, name="db")

    @limit
    async def query(sql: str) -> list[Row]: ...

    with limit:  # a thread waits (blocks) for at most max_wait
        blocking_call()
    ```

    Args:
        max_concurrent: permits, an int >= 1.
        max_waiting: how many callers may wait for a permit (int >= 0); `None` (the default) means
            as many as `max_concurrent`: a queue that drains in about one hold time. A caller that
            finds the queue full is rejected at once. With `max_wait=0` there is no queue, whatever
            `max_waiting` says (the `max_waiting` property then reads 0).
        max_wait: the longest a caller waits for a permit, in seconds (default 1.0); `0` means
            never wait (reject when full), `None` means no time bound (the queue stays bounded).
        standing_wait: the longest a caller waits while the queue *stands*: when it has not been
            empty for `max_wait`, arrivals outpace the permits and waiting only adds latency, so
            newcomers wait at most this (in [0, `max_wait`]) until the queue has emptied once
            (CoDel's standing-queue test; Facebook's adaptive queue). Bursts still get the full
            `max_wait`; sustained overload gets answers fast. Default `None`: always `max_wait`.
        order: `"fifo"` (the default, oldest waiter first), `"lifo"` (newest first: under
            overload the freshest callers, still wanted, are served and stale ones time out) or
            `"adaptive"` (oldest first; but while overloaded, that is while a fifth of the
            callers of the last half second or so were turned away or left queued, newest first
            from a queue cut to a tenth of the limit, at least 1: fair while bursts pass, fresh
            and quick to refuse under sustained overload; `resilient._overload`).
        name: the name in metrics and in `ConcurrencyLimitError.name`.
        sink: where metrics go; default the process-wide sink.
        clock: the clock that times waits and holds; default `SystemClock`.

    Raises:
        ConcurrencyLimitError: (on entry) the queue is full, or the wait expired. `retry_after`
            estimates when a permit frees up (smoothed hold time and queue position); `None`
            until the limit has been busy once. Holds are timed for decorated calls and for `with`
            and `async with` blocks alike.
        TypeError, ValueError: (at construction) a bad option; the message names it.

    An async caller that finds a free permit takes it without yielding to the event loop. A sync
    caller waits by blocking its thread, except on an event-loop thread (in a task or in a plain
    loop callback), where it is rejected instead (blocking the loop would stall the very tasks
    that hold the permits).
    """

    __slots__ = ("_busy_free", "_min_free", "_starts")

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_waiting: int | None = None,
        max_wait: float | None = 1.0,
        standing_wait: float | None = None,
        order: Order = "fifo",
        name: str | None = None,
        sink: MetricsSink | None = None,
        clock: Clock | None = None,
    ) -> None:
        at_least("max_concurrent", max_concurrent, 1)
        super().__init__(
            max_concurrent,
            max_waiting=max_waiting,
            max_wait=max_wait,
            standing_wait=standing_wait,
            order=order,
            name=name,
            sink=sink,
            clock=clock,
        )
        # Holds are timed only while at most a quarter of the permits are free: that is when
        # `retry_after` matters, and an idle limit then costs no clock reads at all.
        self._busy_free = max_concurrent // 4
        self._min_free = max_concurrent  # racy on the fast path: a statistic, never a decision
        self._starts: deque[float] = deque()  # admission times of timed `with` blocks in flight

    @property
    def max_concurrent(self) -> int:
        """The number of permits."""
        return self._limit

    # --- Policy hooks: the token is the admission time of a timed call, else None -------------

    @override
    @_fast_path_first
    def _enter_nowait(self) -> float | None:
        self._check_queue()  # no free permit: reject at once if the queue is full
        return MUST_WAIT  # type: ignore[no-any-return]

    @override
    @_fast_path_first
    def _enter(self) -> float | None:
        return self._take_slow()  # no free permit: wait, or be rejected

    async def _enter_wait(self) -> float | None:
        return await self._take_async()

    @override
    def _exit_ok(self, token: float | None, result: object) -> None:
        if token is not None:
            if token is _BLOCK:  # a context manager's exit: see below, and it may raise
                if len(self._permits) >= self._limit:
                    msg = f"{self!r} exited more often than it was entered"
                    raise RuntimeError(msg)
                starts = self._starts
                try:
                    token = starts.popleft() if starts else None
                except IndexError:  # pragma: no cover - another thread took the last one
                    token = None
            if token is not None:
                # Racy on purpose: a lost update of a smoothed hint is harmless; a lock is not.
                self._hold = smooth(self._hold, self._clock.now() - token)
        self._permits.append(None)
        if self._queued:  # after the append: see _limit's "no lost wake-up"
            with self._lock:
                self._dispatch_locked()

    @override
    def _exit_error(self, token: float | None, exc: BaseException) -> None:
        # A failure or a cancellation holds and releases its permit like a success.
        self._exit_ok(token, None)

    # --- context managers -----------------------------------------------------------------------
    # The context managers skip Policy's token stack (a context variable, about 600 ns per
    # `async with`: more than an asyncio.Semaphore), so a block has nowhere cheap to keep its own
    # admission time. The times of busy entries (those a decorator would time) wait in `_starts`
    # instead, and each exit takes the oldest one: exits are paired with timed entries in order.
    # While busy, a sample is then the time calls stay in flight on average (Little's law) rather
    # than the exiting block's own hold: enough for the estimate behind `retry_after`. An idle
    # limit pays one truth test per exit; `_starts` never holds more times than blocks in flight.
    # A block exits through `_exit_ok(_BLOCK)`, which also refuses an exit without an entry: one
    # call per exit (there were two before blocks were timed; each costs about 15 ns here).

    def __enter__(self) -> Self:
        token = self._enter()
        if token is not None:
            self._starts.append(token)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self._exit_ok(_BLOCK, None)

    async def __aenter__(self) -> Self:
        token = self._enter_nowait()
        if token is MUST_WAIT:
            token = await self._take_async()
        if token is not None:
            self._starts.append(token)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self._exit_ok(_BLOCK, None)

    def _max_active_locked(self) -> int:
        return max(self._max_active, self._limit - self._min_free)

    def __repr__(self) -> str:
        return (
            f"ConcurrencyLimit({self._limit}, max_waiting={self._max_waiting!r}, "
            f"max_wait={self._max_wait!r}, order={self.order!r}, name={self.name!r})"
        )
