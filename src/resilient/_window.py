"""Sliding windows of call outcomes: a ring of bucket aggregates plus running totals.

Both windows keep `calls`, `failures` and `slow` totals that are always up to date, so reading them
is O(1), and recording is O(1) too (amortised, for the time window). Nothing runs in the
background: the time window moves forward lazily, when it is touched, by dropping the buckets that
fell out of it (resilience4j's `SlidingTimeWindowMetrics`).

Neither class locks: the circuit breaker calls them inside its own short critical section.
"""

from __future__ import annotations

import math


__all__ = ["CountWindow", "TimeWindow"]

# A count window stores one small code per call in its ring.
_FAILED = 1
_SLOW = 2


class CountWindow:
    """The outcomes of the last *size* calls.

    Args:
        size: how many calls the window holds (>= 1).
    """

    __slots__ = ("_head", "_ring", "calls", "failures", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ring = [0] * size
        self._head = 0
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def record(self, now: float, failed: bool, slow: bool) -> None:  # noqa: ARG002 - one signature for both windows
        """Add one outcome, evicting the oldest once the window is full (*now* is unused)."""
        head = self._head
        ring = self._ring
        if self.calls == self.size:
            old = ring[head]
            self.failures -= old & _FAILED
            self.slow -= (old & _SLOW) >> 1
        else:
            self.calls += 1
        ring[head] = (_FAILED if failed else 0) | (_SLOW if slow else 0)
        self.failures += failed
        self.slow += slow
        head += 1
        self._head = 0 if head == self.size else head

    def record_successes(self, count: int) -> None:
        """Add *count* successes at once (O(min(count, size)))."""
        if count >= self.size:
            self._ring = [0] * self.size
            self._head = 0
            self.calls = self.size
            self.failures = self.slow = 0
            return
        for _ in range(count):
            self.record(0.0, failed=False, slow=False)

    def advance(self, now: float) -> None:
        """Do nothing: a count window moves only when calls are recorded."""

    def clear(self) -> None:
        """Forget every outcome."""
        self._ring = [0] * self.size
        self._head = 0
        self.calls = self.failures = self.slow = 0

    def __repr__(self) -> str:
        return f"CountWindow(size={self.size}, calls={self.calls}, failures={self.failures})"


class TimeWindow:
    """The outcomes of the calls that ended in the last *seconds*, in *buckets* equal slices.

    Args:
        seconds: the span of the window (> 0).
        buckets: how many slices it is cut into (>= 1). A call leaves the window when its whole
            slice has, so the window covers between `seconds - seconds/buckets` and `seconds`.
    """

    __slots__ = (
        "_fail",
        "_head",
        "_n",
        "_slow",
        "buckets",
        "calls",
        "epoch",
        "failures",
        "seconds",
        "slow",
        "width",
    )

    def __init__(self, seconds: float, buckets: int) -> None:
        self.seconds = seconds
        self.buckets = buckets
        self._n = [0] * buckets
        self._fail = [0] * buckets
        self._slow = [0] * buckets
        self._head = 0
        self.width = seconds / buckets
        """The span of one slice, in seconds."""
        # The index of the slice the head bucket holds (`now // width`); -inf until first touched.
        self.epoch = -math.inf
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def advance(self, now: float) -> None:
        """Drop the slices that ended more than *seconds* before *now*."""
        epoch = now // self.width
        steps = epoch - self.epoch
        if steps <= 0:
            return
        self.epoch = epoch
        if steps >= self.buckets:
            self.clear_counts()
            return
        n, fail, slow = self._n, self._fail, self._slow
        head = self._head
        for _ in range(int(steps)):
            head += 1
            if head == self.buckets:
                head = 0
            self.calls -= n[head]
            self.failures -= fail[head]
            self.slow -= slow[head]
            n[head] = fail[head] = slow[head] = 0
        self._head = head

    def record_successes(self, count: int) -> None:
        """Add *count* successes to the newest slice (they ended in it: the caller checked)."""
        self._n[self._head] += count
        self.calls += count

    def record(self, now: float, failed: bool, slow: bool) -> None:
        """Add one outcome that ended at *now*."""
        self.advance(now)
        head = self._head
        self._n[head] += 1
        self.calls += 1
        if failed:
            self._fail[head] += 1
            self.failures += 1
        if slow:
            self._slow[head] += 1
            self.slow += 1

    def clear_counts(self) -> None:
        """Zero every bucket, keeping the position in time."""
        size = self.buckets
        self._n = [0] * size
        self._fail = [0] * size
        self._slow = [0] * size
        self.calls = self.failures = self.slow = 0

    def clear(self) -> None:
        """Forget every outcome."""
        self.clear_counts()
        self.epoch = -math.inf

    def __repr__(self) -> str:
        return (
            f"TimeWindow(seconds={self.seconds!r}, buckets={self.buckets}, "
            f"calls={self.calls}, failures={self.failures})"
        )
