"""The fields of a circuit breaker, the names of its states, and how its options set them.

`BreakerState` holds every slot and fills them once from validated options (`_setup()`);
`BreakerCore` (in `_breaker_core.py`) is the behaviour on top. Nothing here runs per call.
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from resilient._errors import RejectedError
from resilient._trip import ConsecutiveFailures, FailureRate, HealthSignal, needed_successes
from resilient._window import CountWindow, TimeWindow
from resilient._wrap import Policy
from resilient.metrics._sink import Instrumented


if TYPE_CHECKING:
    import random
    from collections.abc import Callable

    from resilient._backoff import Backoff
    from resilient._clock import Clock
    from resilient._trip import TripModel

    Listener: TypeAlias = Callable[[Any, "CircuitState", "CircuitState"], object]


__all__ = [
    "LOCK_FREE",
    "STATES",
    "UNRECORDED",
    "BreakerState",
    "CircuitState",
]

CircuitState = Literal["closed", "open", "half_open", "forced_open", "disabled", "metrics_only"]
"""The states of a circuit breaker, as `CircuitBreaker.state` and the metrics name them."""

STATES: tuple[CircuitState, ...] = (
    "closed", "open", "half_open", "forced_open", "disabled", "metrics_only",
)  # fmt: skip
CLOSED, OPEN, HALF_OPEN, FORCED_OPEN, DISABLED, METRICS_ONLY = range(6)
"""The states as the breaker stores them: indexes into `STATES`."""

LOCK_FREE: bool = getattr(sys, "_is_gil_enabled", lambda: True)()
"""The lock-free success path leans on the GIL (a `next()` on an `itertools.count` is one atomic
step). Without it (free-threaded CPython), every outcome takes the lock."""

UNRECORDED = -1
"""The token of a call a disabled breaker let through: its outcome is not recorded."""


class BreakerState(Instrumented, Policy[Any]):
    """Every field of a circuit breaker; `_setup()` fills them from validated options."""

    __slots__ = (
        "_announcing", "_attempts", "_backoff", "_closed_gen", "_events", "_fast_enter",
        "_fast_ok", "_fast_token", "_folded", "_gen", "_half_open_since", "_half_open_timeout",
        "_healthy", "_ignore_preds", "_ignore_types", "_interval", "_listener_lists",
        "_listeners", "_lock", "_min_calls", "_n_failure", "_n_ignored", "_n_rejected",
        "_n_slow", "_n_success", "_n_success_fast", "_needed", "_next_check", "_now",
        "_open_until", "_probe_fail", "_probe_ok", "_probes", "_probes_left", "_rate",
        "_record_preds", "_record_types", "_result_pred", "_rng", "_signal", "_slow_after",
        "_slow_rate", "_state", "_streak", "_streak_limit", "_time_window", "_timed_token",
        "_transition_attrs", "_window", "_window_needs_now",
    )  # fmt: skip

    def _setup(  # noqa: PLR0915 - one statement per field, nothing to split
        self,
        *,
        trip: TripModel,
        backoff: Backoff,
        half_open_calls: int,
        success_ratio: float,
        half_open_timeout: float | None,
        record: tuple[tuple[type[BaseException], ...], tuple[Callable[[BaseException], bool], ...]],
        ignore: tuple[tuple[type[BaseException], ...], tuple[Callable[[BaseException], bool], ...]],
        failure_result: Callable[[Any], bool | float | None] | None,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self._record_types, self._record_preds = record
        self._ignore_types: tuple[type[BaseException], ...] = (RejectedError, *ignore[0])
        self._ignore_preds = ignore[1]
        self._backoff = backoff
        self._now: Callable[[], float] = clock.now
        self._rng = rng
        self._result_pred = failure_result
        self._half_open_timeout = half_open_timeout
        self._signal = trip.healthy if isinstance(trip, HealthSignal) else None
        self._interval = trip.interval if isinstance(trip, HealthSignal) else 0.0
        self._probes = 1 if self._signal is not None else half_open_calls
        self._needed = needed_successes(self._probes, success_ratio)
        self._streak_limit = trip.threshold if isinstance(trip, ConsecutiveFailures) else 0
        self._window: CountWindow | TimeWindow | None = None
        self._slow_after: float | None = None
        self._rate = self._slow_rate = 1.0
        self._min_calls = 1
        if isinstance(trip, FailureRate):
            self._window = trip._window()
            self._slow_after = trip.slow_call_duration
            self._rate, self._slow_rate = trip.threshold, trip.slow_call_rate
            self._min_calls = trip.min_calls or 1
        self._window_needs_now = self._window is not None and not isinstance(
            self._window, CountWindow
        )
        # Admission reads one attribute when it needs neither a clock nor a health signal, and
        # a success takes no lock when it needs nothing but a count.
        self._fast_enter = self._signal is None and self._slow_after is None
        self._fast_ok = (
            LOCK_FREE and self._fast_enter and failure_result is None and not self._window_needs_now
        )
        self._time_window = (
            self._window
            if LOCK_FREE
            and isinstance(self._window, TimeWindow)
            and self._fast_enter
            and failure_result is None
            else None
        )
        self._lock = threading.Lock()
        # This breaker's own listeners, and every list whose listeners hear its transitions:
        # its own first, then (for a member of a family) the template's, which the family adds.
        self._listeners: list[Listener] = []
        self._listener_lists: tuple[list[Listener], ...] = (self._listeners,)
        # Transitions waiting to be announced, in the order they happened (`_to` queues them
        # under the lock), and whether a thread is announcing them now (both locked).
        self._events: deque[tuple[int, int]] = deque()
        self._announcing: bool = False
        self._transition_attrs: dict[tuple[int, int], dict[str, str]] = {}
        self._n_success_fast = itertools.count()
        # Typed here: the state machine reassigns them in a subclass.
        self._n_success: int = 0
        self._n_failure: int = 0
        self._n_slow: int = 0
        self._n_ignored: int = 0
        self._n_rejected = itertools.count()
        self._folded: int = 0
        self._state: int = CLOSED
        self._gen: int = 0
        # The generation while CLOSED (else None), and its two views for admission: one for calls
        # that need no clock, one for calls that are timed. One attribute read each.
        self._closed_gen: int | None = 0
        self._fast_token: int | None = 0 if self._fast_enter else None
        self._timed_token: int | None = (
            0 if self._signal is None and self._slow_after is not None else None
        )
        self._attempts: int = 0
        self._streak: int = 0
        self._open_until: float = 0.0
        self._probes_left: int = 0
        self._probe_ok: int = 0
        self._probe_fail: int = 0
        self._half_open_since: float = 0.0
        self._next_check: float = -float("inf")
        self._healthy: bool = True
