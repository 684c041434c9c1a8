"""CircuitBreaker metrics and statistics: the in-memory sink and the OpenTelemetry SDK."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from resilient import (
    Backoff,
    CircuitBreaker,
    CircuitBreakerStatistics,
    CircuitOpenError,
    ConsecutiveFailures,
    FailureRate,
    _breaker,
    _breaker_core,
    _breaker_state,
    _breaker_stats,
    _counting,
    _limit_queue,
)
from resilient.metrics import (
    CIRCUIT_BREAKER_CALLS,
    CIRCUIT_BREAKER_STATE,
    CIRCUIT_BREAKER_TRANSITIONS,
    InMemorySink,
    OTelSink,
)
from resilient.testing import FakeClock, capture_metrics


def drive(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """Two successes, two failures (open), one rejection, one ignored, a probe that closes it."""
    for _ in range(2):
        with breaker:
            pass
    for _ in range(2):
        with pytest.raises(OSError), breaker:
            raise OSError
    with pytest.raises(CircuitOpenError), breaker:
        pass  # pragma: no cover
    clock.advance(1.0)
    with pytest.raises(KeyboardInterrupt), breaker:
        raise KeyboardInterrupt
    with breaker:
        clock.advance(3.0)  # slow probe: counted slow; still closes (no slow-call threshold)


def make(clock: FakeClock, **options) -> CircuitBreaker:
    options.setdefault("trip", ConsecutiveFailures(2))
    return CircuitBreaker("pay", backoff=Backoff(1, 2, 8, 0), clock=clock, **options)


def test_statistics_snapshot(clock) -> None:
    breaker = make(clock)
    drive(breaker, clock)
    stats = breaker.statistics()
    assert isinstance(stats, CircuitBreakerStatistics)
    assert stats == CircuitBreakerStatistics(
        name="pay",
        state="closed",
        retry_after=None,
        successes=3,
        failures=2,
        slow_calls=0,
        rejected=1,
        ignored=1,
        window_calls=0,
        window_failures=0,
        window_slow_calls=0,
        consecutive_failures=0,
        openings=0,
        probes_in_flight=0,
    )
    assert stats.calls == 7
    assert stats.failure_rate == stats.slow_call_rate == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.failures = 0  # type: ignore[misc]


def test_calls_admitted_while_disabled_land_in_no_counter(clock) -> None:
    breaker = make(clock, trip=FailureRate(0.5, calls=10, min_calls=10))
    before = breaker._enter()  # admitted while closed, ends while disabled: counted
    breaker.disable()
    during = breaker._enter()  # admitted while disabled, ends after it: not counted
    with breaker:
        pass
    with pytest.raises(OSError), breaker:
        raise OSError
    with pytest.raises(KeyboardInterrupt), breaker:
        raise KeyboardInterrupt
    breaker._exit_ok(before, None)
    breaker.reset()
    breaker._exit_error(during, OSError())
    stats = breaker.statistics()
    assert (stats.calls, stats.successes, stats.window_calls) == (1, 1, 0)


def test_the_docs_say_calls_admitted_while_disabled_land_in_no_counter() -> None:
    docs = Path(__file__).parents[1] / "docs" / "circuit-breaker.md"
    for text in (
        CircuitBreakerStatistics.__doc__ or "",
        CircuitBreakerStatistics.calls.__doc__ or "",
        docs.read_text(encoding="utf-8"),
    ):
        assert "admitted while disabled" in " ".join(text.split())


def test_one_definition_of_the_state_names_and_of_count_value() -> None:
    assert _breaker_stats.STATES is _breaker_state.STATES
    shared = _counting.count_value
    assert _breaker_core.count_value is _breaker.count_value is _limit_queue._count_value is shared


def test_statistics_of_a_time_window_advance_with_the_clock(clock) -> None:
    breaker = make(clock, trip=FailureRate(0.9, seconds=10, min_calls=5))
    with pytest.raises(OSError), breaker:
        raise OSError
    assert breaker.statistics().failure_rate == 1.0
    clock.advance(11)
    assert breaker.statistics().window_calls == 0


def test_metrics_through_the_default_sink(clock) -> None:
    with capture_metrics() as sink:
        breaker = CircuitBreaker(
            "via-default", trip=ConsecutiveFailures(2), backoff=Backoff(1, 2, 8, 0), clock=clock
        )
        drive(breaker, clock)
        # Breakers of other tests that are not collected yet report to this default sink too.
        mine = [m for m in sink.collect() if m.attributes["resilient.name"] == "via-default"]
        transitions = [
            (m.attributes["from"], m.attributes["to"])
            for m in sink.measurements(CIRCUIT_BREAKER_TRANSITIONS)
        ]
        assert transitions == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
        assert all(
            m.attributes["resilient.name"] == "via-default" and m.value == 1
            for m in sink.measurements(CIRCUIT_BREAKER_TRANSITIONS)
        )
        calls = {
            m.attributes["outcome"]: m.value for m in mine if m.metric is CIRCUIT_BREAKER_CALLS
        }
        assert calls == {"success": 3, "failure": 2, "slow": 0, "rejected": 1, "ignored": 1}
        states = {m.attributes["state"]: m.value for m in mine if m.metric is CIRCUIT_BREAKER_STATE}
        assert states == {
            "closed": 1,
            "open": 0,
            "half_open": 0,
            "forced_open": 0,
            "disabled": 0,
            "metrics_only": 0,
        }


def test_slow_outcome_is_observed(clock) -> None:
    sink = InMemorySink()
    trip = FailureRate(1.0, calls=10, min_calls=10, slow_call_duration=1.0)
    breaker = make(clock, trip=trip, sink=sink)
    with breaker:
        clock.advance(2.0)
    assert sink.total(CIRCUIT_BREAKER_CALLS, {"outcome": "slow"}) == 1
    assert sink.total(CIRCUIT_BREAKER_CALLS, {"outcome": "success"}) == 0


def test_unnamed_breaker_reports_an_empty_name(clock) -> None:
    sink = InMemorySink()
    breaker = CircuitBreaker(trip=ConsecutiveFailures(1), clock=clock, sink=sink)
    breaker.force_open()
    (transition,) = sink.records
    assert transition.attributes == {"resilient.name": "", "from": "closed", "to": "forced_open"}
    assert sink.last(CIRCUIT_BREAKER_STATE, {"state": "forced_open"}) == 1


def test_metrics_through_the_opentelemetry_sdk(clock) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        breaker = make(clock, sink=OTelSink(meter_provider=provider))
        drive(breaker, clock)
        data = reader.get_metrics_data()
        points: dict[str, list[tuple[dict[str, object], float]]] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points.setdefault(metric.name, []).extend(
                        (dict(p.attributes or {}), p.value)
                        for p in metric.data.data_points  # type: ignore[union-attr]
                    )
        calls = {
            attrs["outcome"]: value
            for attrs, value in points["resilient.circuit_breaker.calls"]
            if attrs["resilient.name"] == "pay"
        }
        assert calls == {"success": 3, "failure": 2, "slow": 0, "rejected": 1, "ignored": 1}
        transitions = sorted(
            (attrs["from"], attrs["to"], value)
            for attrs, value in points["resilient.circuit_breaker.transitions"]
        )
        assert transitions == [
            ("closed", "open", 1),
            ("half_open", "closed", 1),
            ("open", "half_open", 1),
        ]
        state = {
            attrs["state"]: value
            for attrs, value in points["resilient.circuit_breaker.state"]
            if attrs["resilient.name"] == "pay"
        }
        assert state["closed"] == 1
        assert state["open"] == 0
    finally:
        provider.shutdown()
