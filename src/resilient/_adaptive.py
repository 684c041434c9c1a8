"""`AdaptiveConcurrencyLimit`: a concurrency limit that finds the throughput knee by itself.

It is `ConcurrencyLimit`'s machinery (`resilient._limit`) with a limit that moves, plus a latency
sampler: every admitted call that returns is a latency sample; at the end of each window a
gradient controller turns the window's mean latency, throughput and peak concurrency into the
next limit.

The controller is Gradient2's shape (Netflix concurrency-limits) with the fixes its users asked
for (docs/concurrency.md has the picture):

- **Gradient.** `g = clamp(tolerance * (baseline + 3 * se) / rtt, 0.5, 1)`, where `se` is the
  standard error of the baseline window's mean; `new = limit * g + headroom`, with headroom
  `min(sqrt(limit), limit / 10)`; `limit += smoothing * (new - limit)`. By Little's law, past the
  knee `limit * baseline / rtt` is the knee itself, so the limit settles just above it: enough
  queue to keep the service busy, no more. The `3 * se` allowance is there because the baseline
  is the least of many noisy means: without it, noise alone reads as a queue.
- **Baseline.** The lowest window latency seen. It does not follow the load up (Gradient2's long
  average does, which lets the limit climb for as long as an overload lasts:
  concurrency-limits#134). It is re-learned only on evidence that the service became slower for
  good: the limit fell by a third or more and throughput fell in proportion (regression over the
  last saturated windows), so the calls were not queueing and their latency is the new no-load
  latency.
- **Throughput guard.** A remembered throughput-vs-concurrency curve (5% buckets, smoothed,
  forgotten after 300 windows without a visit). If 10% more concurrency than a well-visited
  lower level buys less than 3% more throughput, the limit may not rise, and it is pulled back
  to just above the knee of the curve; if it loses more than 10%, the limit backs off
  (thrashing). If the curve is flat as far down as it goes (the limit started above the knee),
  the limit probes down until throughput drops. This stops the climbs that a drifting baseline
  or a latency that hides the queue would allow (failsafe-go's throughput-correlation guard, with
  a memory, so that a limit held still does not forget where the knee was).
- **Drop-aware samples.** Only successful calls are latency samples (a fast failure would fake a
  low latency). A call that raises `TimeoutError` is a drop: a window with drops backs the limit
  off by `backoff` instead of reading a flat latency as "no queue" (concurrency-limits#137).
  Cancellation and other errors are ignored. No decision when the limit was not the bottleneck
  (fewer than half the permits used): an idle service does not teach anything about its knee.
- **Slow start** (opt-in). The additive step is slow from far below the knee (about +0.2 per
  window at a limit of 10). In slow start the limit doubles after each window in which it was
  saturated and latency stayed within 10% of the baseline; after a first full window (the
  baseline), windows end as soon as they have `min_samples` calls and have lasted three mean
  latencies, and never lower the baseline (a short window favours the fast calls). The first
  queued window ends it, with one unsmoothed step to the gradient's target; drops end it too.
  With `order="adaptive"` it holds instead of doubling while the limit counts as overloaded: the
  first window of a step far over the limit does not show yet what the step does.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

from typing_extensions import override

from resilient._gradient import GradientController
from resilient._limit import LimitCore
from resilient._validate import at_least, in_range
from resilient._wrap import MUST_WAIT


if TYPE_CHECKING:
    from resilient._clock import Clock
    from resilient._limit_parts import Order
    from resilient.metrics._sink import MetricsSink


__all__ = ["AdaptiveConcurrencyLimit"]

_NEVER = sys.maxsize
# In slow start a window ends after `min_samples` calls if it lasted at least _QUICK_SPAN times
# their mean latency: a window cut shorter would keep mostly the calls that happened to be fast.
_QUICK_SPAN = 3.0


class AdaptiveConcurrencyLimit(LimitCore[float]):
    """A concurrency limit that moves with the latency of the calls it admits.

    Same use as `ConcurrencyLimit` (decorator, `with`, `async with`, asyncio, trio and threads at
    once, bounded FIFO or LIFO wait, `statistics()`, metrics); `limit` moves between `min_limit`
    and `max_limit`, and the `resilient.concurrency_limit.limit` gauge follows it.

    ```python
    limit = AdaptiveConcurrencyLimit(initial_limit=20, max_limit=200, name="search")

    @limit
    async def search(q: str) -> list[Hit]: ...
    ```

    Args:
        initial_limit: the limit to start from (default 20).
        min_limit: the floor, an int >= 1 (default 1).
        max_limit: the ceiling (default 1000).
        smoothing: fraction of the way to the new target taken per window, in (0, 1] (default 0.2).
        tolerance: latency over the baseline still read as "no queue", >= 1 (default 1.0).
        backoff: multiplier on timeouts or thrashing, in (0, 1) (default 0.9).
        window: the shortest window, in seconds of the clock (default 1.0).
        min_samples: the fewest successful calls in a window (default 20); a window lasts until
            it has both (in slow start, until it has `min_samples`).
        slow_start: begin in slow start (default `False`): while the limit is saturated and
            latency shows no queue, it doubles every window, and windows after the first end as
            soon as they have `min_samples` calls (and three mean latencies); the first window
            whose latency reads as a queue (or that has drops) ends slow start for good. With
            `order="adaptive"`, a window that ends overloaded holds the limit instead.
        max_waiting: as for `ConcurrencyLimit` (`None` means as many as the current limit).
        max_wait: as for `ConcurrencyLimit`.
        standing_wait: as for `ConcurrencyLimit`.
        order: as for `ConcurrencyLimit`.
        overload_tolerance: with `order="adaptive"`, the latency tolerance while the limit is
            overloaded (in [1, `tolerance`]; default: `tolerance`): under sustained overload,
            aim for lower latency, since the rest is turned away anyway.
        name: as for `ConcurrencyLimit`.
        sink: as for `ConcurrencyLimit`.
        clock: as for `ConcurrencyLimit`.

    A call is a latency sample when it returns; a `TimeoutError` is a drop (the limit backs off);
    cancellations and other exceptions are not samples.

    Start at or below the knee you expect (`initial_limit`): from below, the limit climbs a few
    percent per window (or doubles per window in slow start) and stops at the knee; from above,
    it has to discover that it is on the plateau and probe down, which is slower and noisier
    (docs/concurrency.md, "Tuning").
    """

    __slots__ = (
        "_controller",
        "_drops",
        "_max_ever",
        "_min_samples",
        "_quick",
        "_samples",
        "_squares",
        "_start",
        "_sum",
        "_window",
    )

    def __init__(
        self,
        *,
        initial_limit: int = 20,
        min_limit: int = 1,
        max_limit: int = 1000,
        smoothing: float = 0.2,
        tolerance: float = 1.0,
        backoff: float = 0.9,
        window: float = 1.0,
        min_samples: int = 20,
        slow_start: bool = False,
        max_waiting: int | None = None,
        max_wait: float | None = 1.0,
        standing_wait: float | None = None,
        order: Order = "fifo",
        overload_tolerance: float | None = None,
        name: str | None = None,
        sink: MetricsSink | None = None,
        clock: Clock | None = None,
    ) -> None:
        at_least("min_limit", min_limit, 1)
        at_least("max_limit", max_limit, min_limit, "(and >= min_limit)")
        at_least("initial_limit", initial_limit, min_limit, "(between min_limit and max_limit)")
        if initial_limit > max_limit:
            msg = f"initial_limit must be between min_limit and max_limit, got {initial_limit!r}"
            raise ValueError(msg)
        tolerance = in_range("tolerance", tolerance, 1.0)
        if overload_tolerance is not None:
            if order != "adaptive":
                msg = "overload_tolerance needs order='adaptive' (only it knows overload)"
                raise ValueError(msg)
            # At most `tolerance`: under overload the limit aims lower, never higher.
            overload_tolerance = in_range("overload_tolerance", overload_tolerance, 1.0, tolerance)
        controller = GradientController(
            initial_limit=initial_limit,
            min_limit=min_limit,
            max_limit=max_limit,
            smoothing=in_range("smoothing", smoothing, 0.0, 1.0, open_low=True),
            tolerance=tolerance,
            overload_tolerance=overload_tolerance,
            backoff=in_range("backoff", backoff, 0.0, 0.999, open_low=True),
            history=10,
            memory=300,
            slow_start=bool(slow_start),
        )
        window = in_range("window", window, 0.0, open_low=True)
        at_least("min_samples", min_samples, 1)
        super().__init__(
            initial_limit,
            max_waiting=max_waiting,
            max_wait=max_wait,
            standing_wait=standing_wait,
            order=order,
            name=name,
            sink=sink,
            clock=clock,
        )
        self._controller = controller
        self._window = window
        self._min_samples = min_samples
        # A window may end before `window` after this many samples: in slow start only (fast
        # growth where calls are plentiful), once a first full window has set the baseline.
        self._quick = _NEVER
        self._start = self._clock.now()
        self._samples = 0
        self._sum = 0.0
        self._squares = 0.0
        self._drops = 0
        # `_max_active` (LimitQueue's high-water mark of calls in flight, kept by both the fast
        # path and the slow one) restarts every window here: it is the window's peak, a sample
        # for the controller. The peak since creation, for statistics(), is kept in `_max_ever`.
        self._max_ever = 0

    @property
    def min_limit(self) -> int:
        """The floor of the limit."""
        return self._controller.min_limit

    @property
    def max_limit(self) -> int:
        """The ceiling of the limit."""
        return self._controller.max_limit

    # --- Policy hooks: the token is the admission time ------------------------------------------

    def _try_fast(self) -> float | None:
        if not self._queued and not self._debt:  # others waiting: no barging
            permits = self._permits
            try:
                permits.pop()
            except IndexError:
                return None
            next(self._admits)
            inflight = self._limit + self._debt - len(permits)
            # Racy on purpose (a sample and a statistic, never a decision); a compare beats max().
            if inflight > self._max_active:  # noqa: PLR1730
                self._max_active = inflight
            return self._clock.now()
        return None

    def _enter_nowait(self) -> float:
        token = self._try_fast()
        if token is None:
            self._check_queue()
            return MUST_WAIT  # type: ignore[no-any-return]
        return token

    async def _enter_wait(self) -> float:
        return await self._take_async()

    def _enter(self) -> float:
        token = self._try_fast()
        return self._take_slow() if token is None else token

    @override
    def _exit_ok(self, token: float, result: object) -> None:
        now = self._clock.now()
        with self._lock:
            rtt = now - token
            self._samples += 1
            self._sum += rtt
            self._squares += rtt * rtt
            self._end_window_locked(now)
            self._release_locked()

    @override
    def _exit_error(self, token: float, exc: BaseException) -> None:
        now = self._clock.now()
        with self._lock:
            if isinstance(exc, TimeoutError):
                self._drops += 1
                self._end_window_locked(now)
            self._release_locked()

    # --- the window -----------------------------------------------------------------------------

    def _release_locked(self) -> None:
        self._permits.append(None)
        if self._queued or self._debt:
            self._dispatch_locked()

    def _end_window_locked(self, now: float) -> None:
        elapsed = now - self._start
        if (
            elapsed < self._window
            and (self._samples < self._quick or elapsed < _QUICK_SPAN * self._sum / self._samples)
        ) or (self._samples < self._min_samples and not self._drops):
            return
        n = self._samples
        rtt = self._sum / n if n else None
        # The standard error of the window's mean latency: how far noise alone moves it.
        error = math.sqrt(max(0.0, self._squares / n - rtt * rtt) / n) if rtt is not None else 0.0
        limit = self._controller.update(
            rtt=rtt,
            error=error,
            throughput=self._samples / elapsed,
            inflight=self._max_active,
            drops=self._drops,
            overloaded=self._overloaded_locked(now),  # False unless order="adaptive"
        )
        self._start = now
        self._samples = 0
        self._sum = 0.0
        self._squares = 0.0
        self._drops = 0
        self._max_ever = max(self._max_ever, self._max_active)
        self._max_active = self._limit + self._debt - len(self._permits)
        controller = self._controller
        self._quick = self._min_samples if controller.slow_start else _NEVER
        new = round(limit)
        if new != self._limit:
            self._set_limit_locked(new)

    def _max_active_locked(self) -> int:
        return max(self._max_ever, self._max_active)

    def __repr__(self) -> str:
        return (
            f"AdaptiveConcurrencyLimit(limit={self._limit}, min_limit={self.min_limit}, "
            f"max_limit={self.max_limit}, name={self.name!r})"
        )
