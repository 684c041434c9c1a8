"""`ConcurrencyLimit`: an upper bound on calls in flight, with a short, bounded wait.

The permits, the wait queue and the statistics live in `resilient._limit` (shared with the
adaptive limit); this module adds the hot paths of a fixed limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing_extensions import override

from resilient._limit import ALPHA, LimitCore
from resilient._limit_parts import Order, check_int
from resilient._wrap import MUST_WAIT


if TYPE_CHECKING:
    import types

    from typing_extensions import Self

    from resilient._clock import Clock
    from resilient.metrics._sink import MetricsSink


__all__ = ["ConcurrencyLimit"]


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
            finds the queue full is rejected at once.
        max_wait: the longest a caller waits for a permit, in seconds (default 1.0); `0` means
            never wait (reject when full), `None` means no time bound (the queue stays bounded).
        order: `"fifo"` (the default, oldest waiter first) or `"lifo"` (newest first: under
            overload the freshest callers, still wanted, are served and stale ones time out).
        name: the name in metrics and in `ConcurrencyLimitError.name`.
        sink: where metrics go; default the process-wide sink.
        clock: the clock that times waits and holds; default `SystemClock`.

    Raises:
        ConcurrencyLimitError: (on entry) the queue is full, or the wait expired. `retry_after`
            estimates when a permit frees up (smoothed hold time and queue position); `None`
            until the limit has been busy once.
        TypeError, ValueError: (at construction) a bad option; the message names it.

    An async caller that finds a free permit takes it without yielding to the event loop. A sync
    caller waits by blocking its thread, except on an event-loop thread, where it is rejected
    instead (blocking the loop would stall the very tasks that hold the permits).
    """

    __slots__ = ("_busy_free", "_min_free")

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_waiting: int | None = None,
        max_wait: float | None = 1.0,
        order: Order = "fifo",
        name: str | None = None,
        sink: MetricsSink | None = None,
        clock: Clock | None = None,
    ) -> None:
        check_int("max_concurrent", max_concurrent, 1)
        super().__init__(
            max_concurrent,
            max_waiting=max_waiting,
            max_wait=max_wait,
            order=order,
            name=name,
            sink=sink,
            clock=clock,
        )
        # Holds are timed only while at most a quarter of the permits are free: that is when
        # `retry_after` matters, and an idle limit then costs no clock reads at all.
        self._busy_free = max_concurrent // 4
        self._min_free = max_concurrent  # racy on the fast path: a statistic, never a decision

    @property
    def max_concurrent(self) -> int:
        """The number of permits."""
        return self._limit

    # --- Policy hooks: the token is the admission time of a timed call, else None -------------

    def _enter_nowait(self) -> float | None:
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
        self._check_queue()
        return MUST_WAIT  # type: ignore[no-any-return]

    async def _enter_wait(self) -> float | None:
        return await self._take_async()

    def _enter(self) -> float | None:
        if not self._queued:
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
        return self._take_slow()

    @override
    def _exit_ok(self, token: float | None, result: object) -> None:
        if token is not None:
            # Racy on purpose: a lost update of a smoothed hint is harmless; a lock is not free.
            hold = self._clock.now() - token
            smoothed = self._hold
            self._hold = hold if smoothed < 0 else smoothed + (hold - smoothed) * ALPHA
        self._permits.append(None)
        if self._queued:  # after the append: see _limit's "no lost wake-up"
            with self._lock:
                self._dispatch_locked()

    @override
    def _exit_error(self, token: float | None, exc: BaseException) -> None:
        # A failure or a cancellation holds and releases its permit like a success.
        self._exit_ok(token, None)

    # --- context managers -----------------------------------------------------------------------
    # A permit needs no per-call token, so the context managers skip Policy's token stack (a
    # context variable, about 600 ns per `async with`: more than an asyncio.Semaphore).

    def __enter__(self) -> Self:
        self._enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self._check_exit()
        self._exit_ok(None, None)

    async def __aenter__(self) -> Self:
        if self._enter_nowait() is MUST_WAIT:
            await self._take_async()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self._check_exit()
        self._exit_ok(None, None)

    def _max_active_locked(self) -> int:
        return max(self._max_active, self._limit - self._min_free)

    def _check_exit(self) -> None:
        if len(self._permits) >= self._limit:
            msg = f"{self!r} exited more often than it was entered"
            raise RuntimeError(msg)

    def __repr__(self) -> str:
        return (
            f"ConcurrencyLimit({self._limit}, max_waiting={self._max_waiting!r}, "
            f"max_wait={self._max_wait!r}, order={self.order!r}, name={self.name!r})"
        )
