"""What trips a circuit breaker: small frozen values, one per model, and the outcome filters.

- `ConsecutiveFailures(5)`: open after five failures in a row (the simple model every Python
  breaker has).
- `FailureRate(0.5, calls=100)` / `FailureRate(0.5, seconds=60)`: open when at least half of the
  calls in a sliding window failed, once the window holds `min_calls` calls; optionally also when
  too many calls were slow.
- `HealthSignal(fn)`: open when `fn()` says the thing is unhealthy, whatever the calls do (load
  shedding on event-loop delay is this).

They are configuration only: each breaker builds its own state (a window) from them, so one value
can configure a whole family of breakers.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, Union, cast

from resilient._validate import check_int, check_number
from resilient._window import CountWindow, TimeWindow


if TYPE_CHECKING:
    from collections.abc import Callable, Iterable


__all__ = [
    "ConsecutiveFailures",
    "ExceptionFilter",
    "FailureRate",
    "HealthSignal",
    "TripModel",
    "as_delay",
    "classify_result",
    "compile_filter",
    "needed_successes",
]


@dataclass(frozen=True, slots=True)
class ConsecutiveFailures:
    """Open after *threshold* failures in a row; any success starts the count again.

    Args:
        threshold: failures in a row that open the circuit (>= 1).
    """

    threshold: int = 5

    def __post_init__(self) -> None:
        check_int("threshold", self.threshold, "an int >= 1", lambda v: v >= 1)


@dataclass(frozen=True, slots=True)
class FailureRate:
    """Open when the failure rate (or the slow-call rate) over a sliding window reaches a threshold.

    Args:
        threshold: the failure rate that opens the circuit, in (0, 1]; compared with `>=`.
        calls: a window of the last *calls* calls (>= 1). The default when *seconds* is not given
            either: 100.
        seconds: a window of the calls that ended in the last *seconds* (> 0) instead, kept in
            *buckets* slices.
        min_calls: no decision until the window holds this many calls (>= 1, and <= *calls* for a
            count window). Default: 20, or *calls* if that is smaller.
        buckets: slices of a time window (1 to 1000, default 10).
        slow_call_duration: a call that takes longer than this, in seconds (> 0), is slow; `None`
            (the default) does not time calls at all.
        slow_call_rate: the share of slow calls that opens the circuit, in (0, 1] (default 1.0).
    """

    threshold: float = 0.5
    _: KW_ONLY
    calls: int | None = None
    seconds: float | None = None
    min_calls: int | None = None
    buckets: int = 10
    slow_call_duration: float | None = None
    slow_call_rate: float = 1.0

    def __post_init__(self) -> None:
        check_number("threshold", self.threshold, "a number in (0, 1]", lambda v: 0 < v <= 1)
        if self.calls is not None and self.seconds is not None:
            msg = "give calls (a count window) or seconds (a time window), not both"
            raise ValueError(msg)
        if self.seconds is None:
            calls = 100 if self.calls is None else self.calls
            check_int("calls", calls, "an int >= 1", lambda v: v >= 1)
            object.__setattr__(self, "calls", calls)
        else:
            check_number("seconds", self.seconds, "a finite number > 0", lambda v: v > 0)
        check_int("buckets", self.buckets, "an int in [1, 1000]", lambda v: 1 <= v <= 1000)  # noqa: PLR2004
        if self.min_calls is None:
            object.__setattr__(self, "min_calls", min(20, self.calls or 20))
        cap = self.calls
        accepted = f"an int in [1, calls={cap}]" if cap is not None else "an int >= 1"
        check_int("min_calls", self.min_calls, accepted, lambda v: 1 <= v <= (cap or v))
        if self.slow_call_duration is not None:
            check_number(
                "slow_call_duration", self.slow_call_duration, "a finite number > 0 or None",
                lambda v: v > 0,
            )  # fmt: skip
        check_number(
            "slow_call_rate", self.slow_call_rate, "a number in (0, 1]", lambda v: 0 < v <= 1
        )

    def _window(self) -> CountWindow | TimeWindow:
        if self.seconds is not None:
            return TimeWindow(self.seconds, self.buckets)
        return CountWindow(self.calls or 1)


@dataclass(frozen=True, slots=True)
class HealthSignal:
    """Open when *healthy()* returns false; probe by asking it again, not by letting a call through.

    Args:
        healthy: a callable with no arguments that returns `True` while the guarded thing is
            healthy. It runs on the caller's thread, outside any lock; it should be cheap (read a
            value another component keeps, such as a loop monitor's p99). If it raises, the error
            is logged and the signal counts as healthy, so a broken signal never rejects traffic.
        interval: ask at most once per *interval* seconds while closed (>= 0; 0 asks on every
            call). The answer is reused in between.
    """

    healthy: Callable[[], bool]
    _: KW_ONLY
    interval: float = 0.0

    def __post_init__(self) -> None:
        if not callable(self.healthy):
            msg = f"healthy must be a callable with no arguments, got {self.healthy!r}"
            raise TypeError(msg)
        check_number("interval", self.interval, "a finite number >= 0", lambda v: v >= 0)


TripModel: TypeAlias = ConsecutiveFailures | FailureRate | HealthSignal
"""What a breaker's `trip=` accepts."""

ExceptionFilter: TypeAlias = Union[
    "type[BaseException]",
    "Callable[[BaseException], bool]",
    "tuple[type[BaseException] | Callable[[BaseException], bool], ...]",
]
"""An exception type, a predicate on the exception, or a tuple mixing both."""


def compile_filter(
    name: str, spec: object
) -> tuple[tuple[type[BaseException], ...], tuple[Callable[[BaseException], bool], ...]]:
    """Split an `ExceptionFilter` into the types for one `isinstance` and the predicates.

    Raises:
        TypeError: an item is neither an exception type nor a callable.
    """
    items: tuple[object, ...] = (
        tuple(cast("Iterable[object]", spec)) if isinstance(spec, (tuple, list)) else (spec,)
    )
    types: list[type[BaseException]] = []
    predicates: list[Callable[[BaseException], bool]] = []
    for item in items:
        if isinstance(item, type) and issubclass(item, BaseException):
            types.append(item)
        elif not isinstance(item, type) and callable(item):
            predicates.append(cast("Callable[[BaseException], bool]", item))
        else:
            msg = (
                f"{name} must be an exception type, a predicate on the exception, or a tuple "
                f"of those, got {item!r}"
            )
            raise TypeError(msg)
    return tuple(types), tuple(predicates)


def needed_successes(calls: int, ratio: float) -> int:
    """Return how many of *calls* probes must succeed to reach *ratio* (at least one)."""
    # The epsilon keeps 0.7 * 10 == 7.000000000000001 from asking for 8.
    return max(1, math.ceil(ratio * calls - 1e-9))


def as_delay(value: object) -> float | None:
    """Return *value* as a delay in seconds if it is a positive finite number, else `None`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 < value < math.inf else None


def classify_result(
    predicate: Callable[[Any], bool | float | None], result: object
) -> tuple[bool, float | None]:
    """Apply a `failure_result` predicate: return (failed, the delay it asked for, if any)."""
    verdict = predicate(result)
    if verdict is None or verdict is False:
        return False, None
    return True, as_delay(verdict)
