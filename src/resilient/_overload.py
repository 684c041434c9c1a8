"""When a limit with `order="adaptive"` counts as overloaded: a fifth of its callers in excess.

The adaptive order (Facebook's adaptive LIFO, with CoDel's short queue) serves the newest waiter
first from a queue cut to a tenth of the limit while the limit is overloaded. What "overloaded"
means decides how it behaves at capacity:

- **Not one overflow.** At capacity the queue overflows now and then, when a burst comes in
  faster than permits come back. If one overflow started the mode, the short queue would turn
  away the very callers the long one absorbs, those rejections would keep the mode on, and a
  load the limit can serve would lose a few percent of its callers for as long as it lasted
  (measured in the overload demo at 1x capacity: 8.6% of requests shed in one full run).
- **A share of the callers, over the last two windows.** The limit is overloaded once at least
  `OVERLOAD_SHARE` (a fifth), and at least `OVERLOAD_MIN`, of the callers since the previous
  window's start (`OVERLOAD_WINDOW` each) are in excess: turned away (rejected by a full queue,
  or out of the queue without a permit), or added to the queue (its growth; a queue that
  shrinks counts against). A fifth in excess means arrivals a quarter above what the limit
  serves: more than the bursts at capacity produce, and more than the short queue's own
  rejections there. Queue growth shows overload within tens of milliseconds, before the long
  queue has filled with callers that would wait `max_wait`; but not before the totals span
  `OVERLOAD_SPAN` (20 ms), so that a burst into an idle limit, admitted and queued within a few
  milliseconds, is left to the queue. The mode ends at the first window end where the share is
  under a fifth, or after a lull of two windows.
- **Cheap.** Nothing is added per call on the fast path: the limit's totals are read (one
  `itertools.count` read) when a window ends, and, while not overloaded, when the queue grows
  or a caller is turned away.
"""

from __future__ import annotations


__all__ = [
    "OVERLOAD_MIN",
    "OVERLOAD_QUEUE",
    "OVERLOAD_SHARE",
    "OVERLOAD_SPAN",
    "OVERLOAD_WINDOW",
    "OverloadGauge",
]

OVERLOAD_WINDOW = 0.25
"""Seconds per window; the share turned away is judged over the current and the last one."""
OVERLOAD_SHARE = 0.2
"""The share of callers in excess (turned away, or added to the queue) that is overload."""
OVERLOAD_MIN = 5
"""Fewer callers in excess than this never count as overload (a quiet limit's few)."""
OVERLOAD_SPAN = 0.02
"""Seconds the totals must span before a queue that grew or a caller turned away can start the
mode between window ends: a burst that comes and goes faster is a burst, for the queue to absorb."""
OVERLOAD_QUEUE = 10
"""While overloaded, an `"adaptive"` order's queue holds at most the limit divided by this."""


class OverloadGauge:
    """Whether a limit is overloaded, from its running totals of admitted and turned-away calls.

    The caller holds the limit's lock around every method.
    """

    __slots__ = ("_base", "_base_since", "_middle", "overloaded", "window_start")

    def __init__(self, now: float) -> None:
        self.overloaded = False
        self.window_start = now
        self._base = (0, 0, 0)  # (admitted, turned away, queued) at the previous window's start
        self._base_since = now  # when the base was taken
        self._middle = (0, 0, 0)  # the same at the current window's start

    def end_window(self, now: float, admitted: int, turned_away: int, queued: int) -> bool:
        """Judge the two windows that end *now*, and start the next; `True` if overload began."""
        was, totals = self.overloaded, (admitted, turned_away, queued)
        if now - self.window_start >= 2 * OVERLOAD_WINDOW:
            # The limit's slow path (a queue, a rejection, a release to waiters) went unused for a
            # whole window: not overloaded, and the totals from before say nothing of what next.
            self.overloaded = False
            self._base, self._base_since = totals, now
        else:
            self.overloaded = self._judge(admitted, turned_away, queued)
            self._base, self._base_since = self._middle, self.window_start
        self._middle = totals
        self.window_start = now
        return self.overloaded and not was

    def check(self, now: float, admitted: int, turned_away: int, queued: int) -> bool:
        """The queue grew, or turned a caller away: `True` if that makes the limit overloaded."""
        if self.overloaded or now - self._base_since < OVERLOAD_SPAN:
            return False
        self.overloaded = self._judge(admitted, turned_away, queued)
        return self.overloaded

    def _judge(self, admitted: int, turned_away: int, queued: int) -> bool:
        # Callers the queue gained count as turned away: a queue that grows by a fifth of the
        # arrivals is as much a sign of overload as rejections are, and it shows at once, not
        # a max_wait or a full queue later.
        base_admitted, base_turned, base_queued = self._base
        excess = turned_away - base_turned + queued - base_queued
        offered = excess + admitted - base_admitted
        return excess >= OVERLOAD_MIN and excess >= OVERLOAD_SHARE * offered
