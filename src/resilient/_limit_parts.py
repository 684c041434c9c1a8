"""Parts of the concurrency limits: statistics, option checks, and the waiter.

See `resilient._limit` for how the pieces fit.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from resilient._validate import at_least, in_range


if TYPE_CHECKING:
    from collections.abc import Callable

    import anyio

    from resilient._clock import Clock
    from resilient._waiting import FutureEvent


__all__ = [
    "ConcurrencyLimitStatistics",
    "Order",
    "Waiter",
    "check_options",
]

Order = Literal["fifo", "lifo", "adaptive"]
"""The order in which waiters get permits: oldest first, newest first, or oldest first except
while overloaded (then newest first, from a queue cut to a tenth of the limit:
`resilient._overload`)."""

# Waiter states. Every transition happens under the limit's lock.
WAITING: Final = 0
GRANTED: Final = 1  # a permit was handed to this waiter; the waiter owns it now
GONE: Final = 2  # the waiter left (timeout, cancellation, dead loop); releasers skip it
# Its deadline passed before a permit came (its own timer, late on a busy loop, has not fired
# yet): out of the queue, and woken to time out.
EXPIRED: Final = 3


@dataclass(frozen=True)
class ConcurrencyLimitStatistics:
    """A snapshot of a concurrency limit.

    Every call that tried to enter is counted once, when its fate is known: `admitted`,
    `rejected` (queue full, or no wait allowed), `timed_out` (waited `max_wait` in vain) or
    `cancelled` (its caller went away while it waited). Taken without stopping the fast path, so
    under concurrent threads the fields may be a few calls apart; quiescent, they are exact.

    Attributes:
        limit: the number of permits now (moves for an adaptive limit).
        active: permits held now.
        waiting: callers in the queue now.
        admitted: calls that got a permit, at once or after waiting.
        rejected: calls refused without waiting.
        timed_out: calls refused after waiting `max_wait`.
        cancelled: calls whose caller went away while waiting.
        max_active: the highest `active` seen since creation.
    """

    limit: int
    active: int
    waiting: int
    admitted: int
    rejected: int
    timed_out: int
    cancelled: int
    max_active: int


def check_options(
    max_waiting: int | None,
    max_wait: float | None,
    standing_wait: float | None,
    order: str,
    clock: Clock | None,
) -> None:
    """Raise `TypeError` or `ValueError`, naming the option, for a bad option of a limit."""
    if max_waiting is not None:
        at_least("max_waiting", max_waiting, 0, "or None (as many as the limit)")
    if max_wait is not None:
        in_range("max_wait", max_wait, 0.0)
    if standing_wait is not None:
        if max_wait is None:
            msg = "standing_wait needs a max_wait (a queue stands once it lasts max_wait)"
            raise ValueError(msg)
        in_range("standing_wait", standing_wait, 0.0, max_wait)
    if order not in ("fifo", "lifo", "adaptive"):
        msg = f"order must be 'fifo', 'lifo' or 'adaptive', got {order!r}"
        raise ValueError(msg)
    if clock is not None and not (
        callable(getattr(clock, "now", None)) and hasattr(clock, "sleep")
    ):
        msg = f"clock must have now() and async sleep() methods, got {clock!r}"
        raise TypeError(msg)


class Waiter:
    """One queued caller: its state, its wake-up primitive, and how to reach its thread."""

    __slots__ = ("deadline", "event", "schedule", "since", "state", "thread")

    def __init__(
        self,
        event: threading.Event | anyio.Event | FutureEvent,
        schedule: Callable[[Callable[[], object]], object] | None,
        since: float,
        budget: float | None = None,
    ) -> None:
        self.event = event
        self.thread = threading.get_ident()
        self.schedule = schedule  # the loop's thread-safe entry; None for a thread waiter
        self.since = since
        # No permit is granted from this time on (clock seconds; inf: no bound).
        self.deadline = math.inf if budget is None else since + budget
        self.state = WAITING

    def wake(self) -> bool:
        """Wake the waiter (under the limit's lock); `False` if its event loop is gone."""
        try:
            if self.schedule is None or self.thread == threading.get_ident():
                self.event.set()  # a future of a loop closed meanwhile raises RuntimeError too
            else:
                self.schedule(self.event.set)
        except RuntimeError:  # asyncio: loop closed; trio: RunFinishedError
            return False
        return True

    def __repr__(self) -> str:
        return f"<Waiter state={self.state} since={self.since}>"
