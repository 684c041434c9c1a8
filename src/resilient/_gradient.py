"""The limit algorithm of `AdaptiveConcurrencyLimit`, alone: free of time, threads and permits.

`GradientController.update()` takes one window's aggregates and returns the next limit. The
design and its reasons are in `resilient._adaptive`'s docstring and docs/concurrency.md.
"""

from __future__ import annotations

import math
from collections import deque


__all__ = ["GradientController"]

# Elasticity of throughput to concurrency (1 is perfect scaling) above which the recent windows
# "scale"; measured over at least _MIN_POINTS saturated windows (at least _SATURATED of the
# limit in use) spanning >= 10% of concurrency.
_SCALING = 0.7
_MIN_POINTS = 3
# Standard errors of allowance in the gradient; the queue left above the knee (a fraction of the
# limit, at most its square root).
_NOISE = 3.0
_HEADROOM = 0.1
_NEAR_BEST = 0.95
# Slow start: the factor on the limit per saturated window without a queue.
_SLOW_START = 2.0
_SLOW_NOISE = 0.1
# The guard compares throughput at the current concurrency with that 10-20% lower (_STEP
# buckets): below _FLAT times it (+10% concurrency bought < 3% throughput) the curve is flat;
# below _THRASHING it falls. Curve points are smoothed with _CURVE_ALPHA.
_BUCKET = math.log(1.05)
_STEP = 2  # buckets: 1.05**2 = 10% less concurrency
_FLAT = 1.03
_THRASHING = 0.9
_CURVE_ALPHA = 0.3
_VISITS = 3
_SATURATED = 0.9
# Re-learning the baseline needs the window at the bottom of a history spanning 1.5x.
_BOTTOM = 1.05
_SPAN = 1.5


def _headroom(limit: float) -> float:
    """The queue allowed above the knee: 10% of the limit, at most its square root (Envoy)."""
    return min(math.sqrt(limit), _HEADROOM * limit)


class GradientController:
    """The limit algorithm alone, free of time and threads: feed it one window at a time.

    Args:
        initial_limit: the starting limit.
        min_limit: the floor (>= 1).
        max_limit: the ceiling.
        smoothing: how far the limit moves toward its new target per window, in (0, 1].
        tolerance: latency ratio to the baseline accepted as "no queue" (>= 1).
        overload_tolerance: the tolerance for windows that end overloaded (default: `tolerance`).
        backoff: multiplier applied on drops or thrashing, in (0, 1).
        history: how many saturated windows the re-learning rule looks back on (>= 3).
        memory: how many windows a point of the throughput curve is remembered without a visit.
        slow_start: start in slow start: while the limit is saturated and latency shows no
            queue, double it every window (TCP's slow start), but not while overloaded; leave
            for good at the first window whose latency reads as a queue, or with drops.
    """

    __slots__ = (
        "_baseline_error",
        "_curve",
        "_history",
        "_memory",
        "_normal_tolerance",
        "_overload_tolerance",
        "_probing",
        "_windows",
        "backoff",
        "baseline",
        "limit",
        "max_limit",
        "min_limit",
        "slow_start",
        "smoothing",
        "tolerance",
    )

    def __init__(
        self,
        *,
        initial_limit: float,
        min_limit: int,
        max_limit: int,
        smoothing: float,
        tolerance: float,
        backoff: float,
        history: int,
        memory: int,
        slow_start: bool = False,
        overload_tolerance: float | None = None,
    ) -> None:
        self.limit = float(initial_limit)
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.smoothing = smoothing
        self.tolerance = tolerance  # the one in use: the last window's
        self._normal_tolerance = tolerance
        self._overload_tolerance = tolerance if overload_tolerance is None else overload_tolerance
        self.backoff = backoff
        self.baseline: float | None = None
        self._baseline_error = 0.0
        self._history: deque[tuple[float, float, float]] = deque(maxlen=history)
        # The throughput curve, by concurrency (5% log buckets). Unlike
        # the recent history it remembers the levels below the current one, so a limit held on
        # the plateau does not forget where the knee was.
        self._curve: dict[int, list[float]] = {}  # log-bucket -> [throughput, seen, visits]
        self._windows = 0
        self._probing = False
        self._memory = memory
        self.slow_start = slow_start

    def update(
        self,
        *,
        rtt: float | None,
        throughput: float,
        inflight: int,
        drops: int,
        error: float = 0.0,
        overloaded: bool = False,
    ) -> float:
        """Take one window's aggregates; return the new limit (a float; callers round it).

        Args:
            rtt: mean latency of the window's successful calls (`None` if there were none).
            error: the standard error of that mean (0 if unknown).
            throughput: successful calls per second in the window.
            inflight: the most calls in flight at once during the window.
            drops: calls that timed out during the window.
            overloaded: the limit's callers are being turned away in numbers (an adaptive
                order's gauge, `resilient._overload`): the window is judged with
                `overload_tolerance`, and slow start holds instead of doubling.
        """
        self.tolerance = self._overload_tolerance if overloaded else self._normal_tolerance
        limit = self.limit
        if drops:
            self.slow_start = False
            return self._set(limit * self.backoff)
        if rtt is None or rtt <= 0:
            return limit  # nothing learned: no samples
        saturated = inflight >= _SATURATED * limit
        if saturated and not self.slow_start:
            self._maybe_relearn(inflight, throughput, rtt, error)
        reference = self.baseline  # None: this window is the first one learned from
        gradient = self._gradient(rtt, error)
        if not saturated:
            unsaturated = self._unsaturated(inflight, gradient)
            if unsaturated is not None:
                return self._set(unsaturated)
        if self.slow_start and reference is not None:
            step = self._slow_start_step(
                rtt, reference, gradient, saturated=saturated, overloaded=overloaded
            )
            if step is not None:
                return self._set(step)
        target = limit * gradient + _headroom(limit)
        if saturated:
            target, cut = self._guard(inflight, throughput, target)
            if cut:
                return self._set(target)  # a cut is taken at once, not smoothed
        return self._set(limit + self.smoothing * (target - limit))

    def _unsaturated(self, inflight: int, gradient: float) -> float | None:
        """The next limit after a window that left permits unused, or `None` to go on."""
        limit = self.limit
        if gradient < 1.0 and inflight * (1.0 - gradient) >= max(1.0, _headroom(limit)):
            # A queue (the queue Little's law implies is at least the headroom the limit allows
            # itself above the knee), though the limit was not what held calls back: they
            # queue for something they share (the event loop's CPU, a pool). By Little's law the
            # knee is near inflight * gradient; cut there at once, since the permits above were
            # unused. Without this a limit that starts above the knee lets the queue grow until
            # it is full (half of 100 calls at 2 ms of CPU each is a 100 ms queue). With a few
            # calls in flight a slower window is slower work (a dependency), not a queue of ours:
            # no cut. Slow start goes on, so that a wrong cut can double back once latency is
            # flat again.
            return min(limit, inflight * gradient + _headroom(inflight))
        if inflight * 2 < limit:
            return limit  # the limit was not the bottleneck: nothing learned about the knee
        return None

    def _slow_start_step(
        self, rtt: float, reference: float, gradient: float, *, saturated: bool, overloaded: bool
    ) -> float | None:
        """The next limit in slow start, or `None` to go on as outside it."""
        limit = self.limit
        # Doubling needs latency within _SLOW_NOISE of the baseline: a fixed allowance, not the
        # standard errors (tiny when calls are regular, so that a fraction of a millisecond
        # would end slow start; large in short noisy windows, hiding a queue).
        if rtt > reference * (1 + _SLOW_NOISE):
            # Latency reads as a queue: the last doubling overshot the knee. Leave slow start
            # and go straight to the gradient's target (Little's law puts the knee there),
            # unsmoothed: a smoothed step would keep the overshoot for several windows.
            self.slow_start = False
            return limit * gradient + _headroom(limit)
        if saturated:
            # Neither the throughput curve nor the history learns from these windows: they are
            # short, and their throughput is that of a limit that is about to move.
            # Overloaded (a fifth of the callers turned away or left queued), hold: a load that
            # far over the limit came in a step, and the step's first window has the latency of
            # the calls admitted before it, not yet what the step does. Doubling on it took an
            # I/O-bound app from 139 to 278 permits at the start of a 2x overload, and its p99
            # to 2 s. A load a little over the limit (a step the app may well serve) doubles.
            return limit if overloaded else limit * _SLOW_START
        return None

    def _gradient(self, rtt: float, error: float) -> float:
        """Update the baseline with this window; return the gradient, in [0.5, 1]."""
        baseline = self.baseline
        # Slow-start windows are short, and a short window keeps mostly the calls that happened
        # to be fast: they may not lower the baseline (the first window, full length, sets it).
        # Windows of any load count: those where the limit was not the bottleneck measure the
        # latency without a queue best of all.
        if baseline is None or (rtt < baseline and not self.slow_start):
            baseline = self.baseline = rtt
            self._baseline_error = error
        # The baseline is the least of many noisy means, so it sits a few standard errors low:
        # without this allowance noise alone would read as a queue and hold the limit down.
        allowed = self.tolerance * (baseline + _NOISE * self._baseline_error)
        return min(1.0, max(0.5, allowed / rtt))

    def _maybe_relearn(self, inflight: int, throughput: float, rtt: float, error: float) -> None:
        history = self._history
        history.append((float(inflight), throughput, rtt))
        elasticity = self.elasticity()
        if elasticity is None or elasticity <= _SCALING:
            return
        low = min(x for x, _, _ in history)
        if inflight <= _BOTTOM * low and max(x for x, _, _ in history) >= _SPAN * low:
            # The limit fell and throughput fell with it: below the knee, so this is the latency
            # without queueing. The service became slower for good: re-learn its baseline and
            # its throughput curve.
            self.baseline, self._baseline_error = rtt, error
            self._curve.clear()
            self._probing = False

    def _guard(self, inflight: int, throughput: float, target: float) -> tuple[float, bool]:
        """Bound the gradient's target by the throughput curve; `True`: cut to it at once."""
        limit = self.limit
        gain = self._learn_curve(inflight, throughput)
        if self._probing:
            best = max(y for y, _, _ in self._curve.values())
            if throughput >= _NEAR_BEST * best:
                return limit * self.backoff, True  # still on the plateau: lower
            self._probing = False  # throughput fell: below the knee, let the gradient work
        if gain is None or gain >= _FLAT:
            return target, False
        if gain < _THRASHING:
            return limit * self.backoff, True  # more concurrency lost throughput
        # Throughput no longer rises with concurrency: no higher, and back to just above the
        # knee of the throughput curve if the limit overshot it.
        knee = self.knee()
        if knee <= math.exp(min(self._curve) * _BUCKET):
            # Flat as far down as we have looked: the knee may be lower still (the limit started
            # above it, or the lower levels were forgotten). Probe down.
            self._probing = True
            return min(target, limit * self.backoff), False
        return min(target, limit, knee + _headroom(knee)), False

    def _learn_curve(self, level: int, throughput: float) -> float | None:
        """Record throughput at this concurrency; return its ratio to that at ~10% less."""
        self._windows += 1
        curve = self._curve
        # Buckets 5% wide: a limit that moves still visits each a few times.
        bucket = round(math.log(level) / _BUCKET)
        entry = curve.get(bucket)
        if entry is None:
            curve[bucket] = entry = [throughput, self._windows, 1]
        else:
            entry[0] += _CURVE_ALPHA * (throughput - entry[0])
            entry[1] = self._windows
            entry[2] += 1
        if len(curve) > 1:
            oldest = self._windows - self._memory
            for stale in [x for x, (_, seen, _) in curve.items() if seen < oldest]:
                del curve[stale]
        if entry[2] < _VISITS:
            return None
        # Compare with the buckets 10-20% lower, pooled by visits (not the best of them: the
        # best of many noisy points is a lucky one).
        near = [curve[x] for x in range(bucket - 2 * _STEP, bucket - _STEP + 1) if x in curve]
        visits = sum(v for _, _, v in near)
        if visits < _VISITS:
            return None
        reference = sum(y * v for y, _, v in near) / visits
        return entry[0] / reference if reference > 0 else None

    def elasticity(self) -> float | None:
        """Return d(log throughput)/d(log concurrency) over the recent saturated windows.

        About 1 below the knee (throughput grows with concurrency), 0 on the plateau, negative
        when more concurrency loses throughput. `None` until the windows span at least a 10%
        range of concurrency: a slope over a flat line of points is noise.
        """
        points = self._history
        if len(points) < _MIN_POINTS:
            return None
        xs = [x for x, _, _ in points]
        if max(xs) < 1.1 * min(xs):
            return None
        n = len(points)
        mean_x = sum(xs) / n
        mean_y = sum(y for _, y, _ in points) / n
        if mean_y <= 0:
            return None
        covariance = sum((x - mean_x) * (y - mean_y) for x, y, _ in points)
        variance = sum((x - mean_x) ** 2 for x in xs)
        return covariance / variance * mean_x / mean_y

    def knee(self) -> float:
        """Return the least concurrency with (within 5%) the best throughput on the curve."""
        best = max(y for y, _, _ in self._curve.values())
        bucket = min(x for x, (y, _, _) in self._curve.items() if y >= _NEAR_BEST * best)
        return math.exp(bucket * _BUCKET)

    def _set(self, limit: float) -> float:
        self.limit = min(float(self.max_limit), max(float(self.min_limit), limit))
        return self.limit

    def __repr__(self) -> str:
        return f"GradientController(limit={self.limit:.2f}, baseline={self.baseline!r})"
