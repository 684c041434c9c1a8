"""What a circuit breaker reports: the `statistics()` snapshot and its observed metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from resilient._breaker_state import STATES
from resilient.metrics._catalog import CIRCUIT_BREAKER_CALLS, CIRCUIT_BREAKER_STATE, NAME
from resilient.metrics._sink import Measurement


if TYPE_CHECKING:
    from resilient._breaker_state import CircuitState


__all__ = ["OUTCOMES", "CircuitBreakerStatistics", "metric_attributes", "observe"]

OUTCOMES = ("success", "failure", "slow", "rejected", "ignored")


@dataclass(frozen=True, slots=True)
class CircuitBreakerStatistics:
    """A consistent snapshot of a circuit breaker, from `CircuitBreaker.statistics()`.

    The five outcome counters are cumulative since the breaker was created, and every call lands
    in exactly one of them, except the calls admitted while disabled, which land in none (a
    disabled breaker records nothing). The `window_*` fields describe the trip model's sliding
    window now (all zero for `ConsecutiveFailures` and `HealthSignal`).

    Attributes:
        name: the breaker's name.
        state: `closed`, `open`, `half_open`, `forced_open`, `disabled` or `metrics_only`.
        retry_after: seconds left in the open wait (0 once it is over and no call came yet), or
            `None` when not open.
        successes: calls that succeeded in time.
        failures: calls that failed (slow ones included).
        slow_calls: calls that succeeded, but slower than the trip model's `slow_call_duration`.
        rejected: calls refused without running.
        ignored: calls that were cancelled, rejected by an inner policy, or matched `ignore`.
        window_calls: outcomes in the sliding window.
        window_failures: failures among them.
        window_slow_calls: slow calls among them (failed or not).
        consecutive_failures: the current streak (`ConsecutiveFailures` only).
        openings: consecutive openings since the circuit last closed; the backoff's attempt.
        probes_in_flight: half-open probes admitted and not finished yet.
    """

    name: str | None
    state: CircuitState
    retry_after: float | None
    successes: int
    failures: int
    slow_calls: int
    rejected: int
    ignored: int
    window_calls: int
    window_failures: int
    window_slow_calls: int
    consecutive_failures: int
    openings: int
    probes_in_flight: int

    @property
    def calls(self) -> int:
        """Every call the breaker counted: the sum of the five outcome counters.

        Calls admitted while disabled are not in it: a disabled breaker records nothing.
        """
        return self.successes + self.failures + self.slow_calls + self.rejected + self.ignored

    @property
    def failure_rate(self) -> float:
        """Failures over calls in the window, 0.0 when it is empty."""
        return self.window_failures / self.window_calls if self.window_calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        """Slow calls over calls in the window, 0.0 when it is empty."""
        return self.window_slow_calls / self.window_calls if self.window_calls else 0.0


def metric_attributes(name: str | None) -> tuple[dict[str, str], ...]:
    """Return the attribute dicts of the observed metrics: one per outcome, then one per state."""
    label = name or ""
    return (
        *({NAME: label, "outcome": outcome} for outcome in OUTCOMES),
        *({NAME: label, "state": state} for state in STATES),
    )


def observe(
    attributes: tuple[dict[str, str], ...], stats: CircuitBreakerStatistics
) -> list[Measurement]:
    """Return the observed metrics of one breaker from its snapshot."""
    counts = (stats.successes, stats.failures, stats.slow_calls, stats.rejected, stats.ignored)
    calls = [
        Measurement(CIRCUIT_BREAKER_CALLS, count, attrs)
        for count, attrs in zip(counts, attributes, strict=False)
    ]
    states = [
        Measurement(CIRCUIT_BREAKER_STATE, 1 if state == stats.state else 0, attrs)
        for state, attrs in zip(STATES, attributes[len(OUTCOMES) :], strict=True)
    ]
    return calls + states
