"""`CircuitBreaker`: stop calling what is failing; probe it again after a growing, jittered wait.

This module is the public face: options, validation, manual control, statistics, listeners. The
state machine and why it is cheap and correct are in `_breaker_core.py`.
"""

from __future__ import annotations

import contextlib
import random
from typing import TYPE_CHECKING, Any

from resilient._backoff import Backoff
from resilient._breaker_core import BreakerCore
from resilient._breaker_state import (
    CLOSED,
    DISABLED,
    FORCED_OPEN,
    HALF_OPEN,
    METRICS_ONLY,
    OPEN,
    STATES,
    CircuitState,
)
from resilient._breaker_stats import CircuitBreakerStatistics, metric_attributes, observe
from resilient._clock import system_clock
from resilient._counting import count_value
from resilient._trip import ConsecutiveFailures, FailureRate, HealthSignal, compile_filter
from resilient._validate import check_int, check_number


if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from resilient._breaker_family import CircuitBreakerFamily
    from resilient._clock import Clock
    from resilient._trip import ExceptionFilter, TripModel
    from resilient.metrics._sink import Measurement, MetricsSink


__all__ = ["CircuitBreaker", "CircuitState"]


class CircuitBreaker(BreakerCore):
    """A circuit breaker: a decorator and a (sync and async) context manager.

    Args:
        name: names the breaker in errors, metrics (`resilient.name`) and logs.
        trip: what opens the circuit: `FailureRate()` (the default: half of the last 100 calls
            failed, once 20 were made), `ConsecutiveFailures(n)`, or `HealthSignal(fn)`.
        backoff: the wait in the open state, growing with each consecutive opening and reset
            when the circuit closes (default `Backoff()`: 5 s, doubling, capped at 300 s, +-50 %).
        half_open_calls: probes let through at once in the half-open state (>= 1, default 1);
            other callers are rejected meanwhile.
        success_ratio: the share of those probes that must succeed to close, in (0, 1]
            (default 1.0: all of them). The circuit re-opens as soon as that is out of reach.
        half_open_timeout: seconds after which a half-open circuit whose probes have not all
            reported re-opens, so a stuck probe cannot wedge it (> 0, default 60; `None` waits
            forever).
        record: the exceptions that count as failures: a type, a predicate, or a tuple of those
            (default `Exception`). Other exceptions count as successes: the dependency answered.
        ignore: exceptions that count as neither (checked first; default none). Cancellation
            and `RejectedError` from an inner policy are always ignored.
        failure_result: a predicate on the return value: `True` makes it a failure, `False` or
            `None` a success, and a number a failure that says when to come back (an upstream
            429/503 `Retry-After`), like an exception with a numeric `retry_after` attribute.
            Such a delay lengthens the open wait it causes (up to `backoff.maximum`).
        clock: where time comes from (default the monotonic system clock).
        rng: the jitter's randomness: a `random.Random`, or a seed for a new one.
        sink: where metrics go (default: the process-wide default sink).

    Raises:
        TypeError: an option has the wrong type.
        ValueError: an option is out of range; the message names it and the accepted range.
    """

    __slots__ = ("_metric_attrs", "_options", "trip")

    def __init__(
        self,
        name: str | None = None,
        *,
        trip: TripModel | None = None,
        backoff: Backoff | None = None,
        half_open_calls: int = 1,
        success_ratio: float = 1.0,
        half_open_timeout: float | None = 60.0,
        record: ExceptionFilter = Exception,
        ignore: ExceptionFilter = (),
        failure_result: Callable[[Any], bool | float | None] | None = None,
        clock: Clock = system_clock,
        rng: random.Random | int | None = None,
        sink: MetricsSink | None = None,
    ) -> None:
        super().__init__(name, sink)
        trip = FailureRate() if trip is None else trip
        if not isinstance(trip, (ConsecutiveFailures, FailureRate, HealthSignal)):
            msg = f"trip must be ConsecutiveFailures, FailureRate or HealthSignal, got {trip!r}"
            raise TypeError(msg)
        backoff = Backoff() if backoff is None else backoff
        if not isinstance(backoff, Backoff):
            msg = f"backoff must be a Backoff, got {backoff!r}"
            raise TypeError(msg)
        check_int("half_open_calls", half_open_calls, "an int >= 1", lambda v: v >= 1)
        check_number("success_ratio", success_ratio, "a number in (0, 1]", lambda v: 0 < v <= 1)
        if half_open_timeout is not None:
            check_number(
                "half_open_timeout", half_open_timeout, "a finite number > 0 or None",
                lambda v: v > 0,
            )  # fmt: skip
        if failure_result is not None and not callable(failure_result):
            msg = f"failure_result must be a callable or None, got {failure_result!r}"
            raise TypeError(msg)
        if not callable(getattr(clock, "now", None)):
            msg = f"clock must have a now() method, got {clock!r}"
            raise TypeError(msg)
        if rng is None or (isinstance(rng, int) and not isinstance(rng, bool)):
            rng = random.Random(rng)  # noqa: S311 - jitter, not cryptography
        elif not isinstance(rng, random.Random):
            msg = f"rng must be a random.Random, an int seed or None, got {rng!r}"
            raise TypeError(msg)
        # Kept to build the members of a family with the same configuration (and one rng).
        self._options: dict[str, Any] = {
            "trip": trip, "backoff": backoff, "half_open_calls": half_open_calls,
            "success_ratio": success_ratio, "half_open_timeout": half_open_timeout,
            "record": record, "ignore": ignore, "failure_result": failure_result,
            "clock": clock, "rng": rng, "sink": sink,
        }  # fmt: skip
        self.trip = trip
        self._metric_attrs: tuple[dict[str, str], ...] | None = None
        self._setup(
            trip=trip,
            backoff=backoff,
            half_open_calls=half_open_calls,
            success_ratio=success_ratio,
            half_open_timeout=half_open_timeout,
            record=compile_filter("record", record),
            ignore=compile_filter("ignore", ignore),
            failure_result=failure_result,
            clock=clock,
            rng=rng,
        )

    @property
    def state(self) -> CircuitState:
        """The current state. OPEN turns HALF_OPEN when the next caller arrives after the wait."""
        return STATES[self._state]

    def force_open(self) -> None:
        """Reject every call (`retry_after=None`) until another manual call or `reset()`."""
        self._manual(FORCED_OPEN)

    def force_closed(self) -> None:
        """Close now and resume normal operation; the backoff keeps its count of openings."""
        self._manual(CLOSED)

    def disable(self) -> None:
        """Let every call through and record nothing, until another manual call or `reset()`."""
        self._manual(DISABLED)

    def metrics_only(self) -> None:
        """Let every call through but keep counting and windowing outcomes; never open."""
        self._manual(METRICS_ONLY)

    def reset(self) -> None:
        """Return to a fresh closed state: empty window, no streak, backoff back to its start."""
        self._manual(CLOSED, reset=True)

    def subscribe(
        self, listener: Callable[[CircuitBreaker, CircuitState, CircuitState], object]
    ) -> Callable[[], None]:
        """Call `listener(breaker, from_state, to_state)` on each transition; return an undo.

        Listeners hear this breaker's transitions one at a time, in the order they happened,
        after the breaker's lock is released, usually on the thread that caused the transition:
        if another thread is announcing an earlier transition at that moment, that thread
        announces this one too, next. An exception from a listener is logged and does not reach
        the caller.
        """
        if not callable(listener):
            msg = f"listener must be callable, got {listener!r}"
            raise TypeError(msg)
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def _manual(self, new: int, *, reset: bool = False) -> None:
        with self._lock:
            if self._state != new or reset:
                self._to(new, self._now())  # queues no transition for a reset of a closed one
            if reset:
                self._attempts = 0
        self._announce()

    def statistics(self) -> CircuitBreakerStatistics:
        """Return a consistent snapshot of the state, the window and the cumulative counters."""
        now = self._now()
        with self._lock:
            window = self._window
            if window is not None:
                self._fold(window)
                window.advance(now)
            state = self._state
            return CircuitBreakerStatistics(
                name=self.name,
                state=STATES[state],
                retry_after=max(0.0, self._open_until - now) if state == OPEN else None,
                successes=count_value(self._n_success_fast) + self._n_success,
                failures=self._n_failure,
                slow_calls=self._n_slow,
                rejected=count_value(self._n_rejected),
                ignored=self._n_ignored,
                window_calls=window.calls if window is not None else 0,
                window_failures=window.failures if window is not None else 0,
                window_slow_calls=window.slow if window is not None else 0,
                consecutive_failures=self._streak,
                openings=self._attempts,
                probes_in_flight=(
                    self._probes - self._probes_left - self._probe_ok - self._probe_fail
                    if state == HALF_OPEN
                    else 0
                ),
            )

    def family(self, max_size: int = 1024) -> CircuitBreakerFamily:
        """Return a bounded family of breakers by key that share this breaker's configuration."""
        from resilient._breaker_family import CircuitBreakerFamily  # noqa: PLC0415 - cycle

        return CircuitBreakerFamily(self, max_size=max_size)

    def _observe(self) -> Iterable[Measurement]:
        if self._metric_attrs is None:
            self._metric_attrs = metric_attributes(self.name)
        return observe(self._metric_attrs, self.statistics())

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r}, state={self.state!r})"
