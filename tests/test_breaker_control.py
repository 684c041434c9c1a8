"""CircuitBreaker: classification, manual control, listeners, health signals and families."""

from __future__ import annotations

import logging

import pytest

from resilient import (
    Backoff,
    CircuitBreaker,
    CircuitBreakerFamily,
    CircuitOpenError,
    ConsecutiveFailures,
    FailureRate,
    HealthSignal,
)
from resilient._breaker_signal import check_signal, signal_probe
from resilient.testing import FakeClock  # noqa: TC001 - fixtures are annotated with it


def make(clock: FakeClock, **options) -> CircuitBreaker:
    options.setdefault("trip", ConsecutiveFailures(2))
    options.setdefault("backoff", Backoff(1.0, 2.0, 8.0, 0.0))
    return CircuitBreaker("t", clock=clock, **options)


def raise_in(breaker: CircuitBreaker, exc: BaseException) -> None:
    with pytest.raises(type(exc)), breaker:
        raise exc


def outcomes(breaker: CircuitBreaker) -> tuple[int, int, int, int, int]:
    s = breaker.statistics()
    return s.successes, s.failures, s.slow_calls, s.rejected, s.ignored


class RetryLaterError(Exception):
    def __init__(self, retry_after: object) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


# --- classification -------------------------------------------------------------------------------


def test_record_and_ignore_by_type_and_predicate(clock) -> None:
    breaker = make(
        clock,
        trip=ConsecutiveFailures(10),
        record=(ConnectionError, lambda e: "fatal" in str(e)),
        ignore=(KeyError, lambda e: "skip" in str(e)),
    )
    raise_in(breaker, ConnectionError())  # failure
    raise_in(breaker, ValueError("fatal"))  # failure, by predicate
    raise_in(breaker, ValueError("other"))  # success: the dependency answered
    raise_in(breaker, KeyError("x"))  # ignored
    raise_in(breaker, ConnectionError("skip"))  # ignored wins over record
    assert outcomes(breaker) == (1, 2, 0, 0, 2)


def test_single_predicate_filter(clock) -> None:
    breaker = make(clock, record=lambda e: isinstance(e, OSError))
    raise_in(breaker, ValueError())
    raise_in(breaker, OSError())
    assert outcomes(breaker) == (1, 1, 0, 0, 0)


def test_cancellation_is_neither_and_releases_a_probe(clock) -> None:
    breaker = make(clock)
    raise_in(breaker, KeyboardInterrupt())  # not an Exception: a cancellation
    raise_in(breaker, OSError())
    raise_in(breaker, OSError())
    clock.advance(1.0)
    raise_in(breaker, KeyboardInterrupt())  # a probe that went away
    assert breaker.state == "half_open"
    assert breaker.statistics().probes_in_flight == 0
    with breaker:
        pass
    assert breaker.state == "closed"
    assert outcomes(breaker) == (1, 2, 0, 0, 2)


def test_failure_result_predicate(clock) -> None:
    def verdict(result: object) -> bool | float | None:
        return {"ok": False, "none": None, "bad": True, "busy": 30.0}[str(result)]

    breaker = make(clock, trip=ConsecutiveFailures(3), failure_result=verdict)
    guarded = breaker(lambda r: r)
    for result in ("ok", "none", "bad"):
        assert guarded(result) == result
    assert outcomes(breaker) == (2, 1, 0, 0, 0)
    guarded("bad")
    guarded("busy")  # a failure that also says when to come back
    assert breaker.state == "open"
    assert breaker.statistics().retry_after == 8.0  # capped at backoff.maximum


def test_exception_retry_after_extends_the_open_wait(clock) -> None:
    breaker = make(clock, trip=ConsecutiveFailures(1), backoff=Backoff(1.0, 2.0, 60.0, 0.0))
    raise_in(breaker, RetryLaterError(12))
    assert breaker.statistics().retry_after == 12.0
    clock.advance(12.0)
    raise_in(breaker, RetryLaterError(0.5))  # shorter than the backoff: the backoff wins
    assert breaker.statistics().retry_after == 2.0


@pytest.mark.parametrize("value", [None, "12", True, -1, 0, float("nan"), float("inf")])
def test_unusable_retry_after_is_ignored(clock, value) -> None:
    breaker = make(clock, trip=ConsecutiveFailures(1))
    raise_in(breaker, RetryLaterError(value))
    assert breaker.statistics().retry_after == 1.0


def test_a_raising_filter_counts_as_failure_and_is_logged(clock, caplog) -> None:
    def broken(exc: BaseException) -> bool:
        raise RuntimeError("bug")

    breaker = make(clock, record=broken)
    with caplog.at_level(logging.ERROR, logger="resilient.circuit_breaker"):
        raise_in(breaker, ValueError())
    assert outcomes(breaker) == (0, 1, 0, 0, 0)
    assert "outcome filter" in caplog.text


# --- manual control -------------------------------------------------------------------------------


def test_force_open_and_force_closed(clock) -> None:
    breaker = make(clock)
    breaker.force_open()
    assert breaker.state == "forced_open"
    with pytest.raises(CircuitOpenError) as info, breaker:
        pass  # pragma: no cover
    assert info.value.retry_after is None
    clock.advance(1000)
    with pytest.raises(CircuitOpenError), breaker:
        pass  # pragma: no cover
    breaker.force_closed()
    assert breaker.state == "closed"
    with breaker:
        pass


def test_force_closed_keeps_the_backoff_count_and_reset_does_not(clock) -> None:
    breaker = make(clock)
    for _ in range(2):
        raise_in(breaker, OSError())
    clock.advance(1.0)
    breaker._enter()  # a probe is running: half-open
    breaker.force_closed()
    for _ in range(2):
        raise_in(breaker, OSError())
    assert breaker.statistics().retry_after == 2.0  # second opening in a row
    breaker.reset()
    assert breaker.statistics().openings == 0
    for _ in range(2):
        raise_in(breaker, OSError())
    assert breaker.statistics().retry_after == 1.0


def test_disable_lets_everything_through_and_records_nothing(clock) -> None:
    breaker = make(clock)
    breaker.disable()
    assert breaker.state == "disabled"
    for _ in range(5):
        raise_in(breaker, OSError())
    with breaker:
        pass
    assert outcomes(breaker) == (0, 0, 0, 0, 0)
    breaker.reset()
    assert breaker.state == "closed"


def test_metrics_only_records_but_never_rejects(clock) -> None:
    breaker = make(clock, trip=FailureRate(0.5, calls=4, min_calls=2))
    breaker.metrics_only()
    for _ in range(6):
        raise_in(breaker, OSError())
    with breaker:
        pass
    stats = breaker.statistics()
    assert stats.state == "metrics_only"
    assert (stats.window_calls, stats.window_failures) == (4, 3)
    assert outcomes(breaker) == (1, 6, 0, 0, 0)


def test_metrics_only_times_calls(clock) -> None:
    trip = FailureRate(0.5, calls=4, min_calls=1, slow_call_duration=1.0)
    breaker = make(clock, trip=trip)
    breaker.metrics_only()
    with breaker:
        clock.advance(2.0)
    assert breaker.statistics().window_slow_calls == 1


def test_manual_calls_are_idempotent(clock) -> None:
    breaker = make(clock)
    seen = []
    breaker.subscribe(lambda b, old, new: seen.append((old, new)))
    breaker.force_open()
    breaker.force_open()
    breaker.reset()
    breaker.reset()
    assert seen == [("closed", "forced_open"), ("forced_open", "closed")]


# --- listeners ------------------------------------------------------------------------------------


def test_listeners_hear_every_transition_in_order(clock) -> None:
    breaker = make(clock)
    seen = []
    unsubscribe = breaker.subscribe(lambda b, old, new: seen.append((b.name, old, new)))
    for _ in range(2):
        raise_in(breaker, OSError())
    clock.advance(1.0)
    with breaker:
        pass
    assert seen == [
        ("t", "closed", "open"),
        ("t", "open", "half_open"),
        ("t", "half_open", "closed"),
    ]
    unsubscribe()
    unsubscribe()  # twice is harmless
    breaker.force_open()
    assert len(seen) == 3


def test_a_raising_listener_is_logged_and_harmless(clock, caplog) -> None:
    breaker = make(clock)
    seen = []

    def broken(b, old, new):
        raise RuntimeError("listener bug")

    breaker.subscribe(broken)
    breaker.subscribe(lambda b, old, new: seen.append(new))
    with caplog.at_level(logging.ERROR, logger="resilient.circuit_breaker"):
        for _ in range(2):
            raise_in(breaker, OSError())
    assert breaker.state == "open"
    assert seen == ["open"]
    assert "a listener of circuit breaker" in caplog.text


def test_a_transition_caused_by_a_listener_waits_for_the_one_being_delivered(clock) -> None:
    breaker = make(clock)
    seen = []

    def close_again(b, old, new):
        if new == "open":
            b.force_closed()  # a second transition, from inside the delivery of the first

    breaker.subscribe(close_again)
    breaker.subscribe(lambda b, old, new: seen.append((old, new)))
    for _ in range(2):
        raise_in(breaker, OSError())
    assert breaker.state == "closed"
    assert seen == [("closed", "open"), ("open", "closed")]  # every listener hears them in order


def test_a_listener_that_raises_a_base_exception_does_not_stop_later_deliveries(clock) -> None:
    breaker = make(clock)
    seen = []

    def interrupt(b, old, new):
        if new == "forced_open":
            raise KeyboardInterrupt

    breaker.subscribe(interrupt)
    breaker.subscribe(lambda b, old, new: seen.append(new))
    with pytest.raises(KeyboardInterrupt):
        breaker.force_open()  # reaches the caller, as it always did
    assert breaker.state == "forced_open"
    breaker.reset()
    assert seen == ["closed"]


def test_subscribe_refuses_non_callables(clock) -> None:
    with pytest.raises(TypeError, match="listener must be callable"):
        make(clock).subscribe(3)  # type: ignore[arg-type]


# --- health signal --------------------------------------------------------------------------------


class Signal:
    def __init__(self) -> None:
        self.healthy = True
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.healthy


def test_health_signal_drives_the_same_state_machine(clock) -> None:
    signal = Signal()
    breaker = make(clock, trip=HealthSignal(signal))
    with breaker:
        pass
    signal.healthy = False
    with pytest.raises(CircuitOpenError) as info, breaker:
        pass  # pragma: no cover
    assert info.value.retry_after == 1.0
    assert breaker.state == "open"
    clock.advance(1.0)
    with pytest.raises(CircuitOpenError) as info, breaker:
        pass  # pragma: no cover
    assert info.value.retry_after == 2.0  # the half-open check said no: open again, longer
    clock.advance(2.0)
    signal.healthy = True
    with breaker:
        pass
    assert breaker.state == "closed"
    assert breaker.statistics().openings == 0


def test_other_callers_are_rejected_while_the_signal_is_checked(clock) -> None:
    breaker: CircuitBreaker
    inner = []

    def healthy() -> bool:
        if breaker.state == "half_open":
            try:
                with breaker:
                    inner.append("admitted")  # pragma: no cover
            except CircuitOpenError:
                inner.append("rejected")
        return clock.now() > 0

    breaker = make(clock, trip=HealthSignal(healthy))
    with pytest.raises(CircuitOpenError), breaker:
        pass  # pragma: no cover
    clock.advance(1.0)
    with breaker:
        pass
    assert inner == ["rejected"]


def test_health_signal_interval_caches_the_answer(clock) -> None:
    signal = Signal()
    breaker = make(clock, trip=HealthSignal(signal, interval=5.0))
    for _ in range(10):
        with breaker:
            pass
    assert signal.asked == 1
    signal.healthy = False
    clock.advance(5.0)
    with pytest.raises(CircuitOpenError), breaker:
        pass  # pragma: no cover
    with pytest.raises(CircuitOpenError), breaker:
        pass  # pragma: no cover
    assert signal.asked == 2
    clock.advance(1.0)
    signal.healthy = True
    for _ in range(3):
        with breaker:
            pass
    assert signal.asked == 3  # the half-open check; the fresh answer is reused after it


def test_a_raising_signal_counts_as_healthy(clock, caplog) -> None:
    def broken() -> bool:
        raise RuntimeError("signal bug")

    breaker = make(clock, trip=HealthSignal(broken))
    with caplog.at_level(logging.ERROR, logger="resilient.circuit_breaker"), breaker:
        pass
    assert breaker.state == "closed"
    assert "health signal" in caplog.text


def test_health_signal_counts_outcomes_but_they_do_not_trip(clock) -> None:
    breaker = make(clock, trip=HealthSignal(lambda: True))
    for _ in range(5):
        raise_in(breaker, OSError())
    assert breaker.state == "closed"
    assert outcomes(breaker) == (0, 5, 0, 0, 0)


def test_signal_changed_state_under_us_rejects_without_reopening(clock) -> None:
    signal = Signal()
    breaker = make(clock, trip=HealthSignal(signal))
    gen = breaker._gen
    breaker.force_open()
    signal.healthy = False
    with pytest.raises(CircuitOpenError) as info:
        check_signal(breaker, gen)
    assert info.value.retry_after is None
    assert breaker.state == "forced_open"
    with pytest.raises(CircuitOpenError):
        signal_probe(breaker, gen, clock.now())
    assert breaker.statistics().openings == 0


# --- family ---------------------------------------------------------------------------------------


def test_family_one_breaker_per_key(clock) -> None:
    template = make(clock)
    hosts = template.family(max_size=8)
    assert isinstance(hosts, CircuitBreakerFamily)
    a, b = hosts["a.example"], hosts["b.example"]
    assert hosts["a.example"] is a
    assert a.name == "t:a.example"
    for _ in range(2):
        raise_in(a, OSError())
    assert (a.state, b.state) == ("open", "closed")
    assert len(hosts) == 2
    assert "a.example" in hosts
    assert list(hosts) == ["b.example", "a.example"]  # least recently used first
    assert repr(hosts).endswith("size=2/8)")
    unnamed = CircuitBreaker(clock=clock).family()
    assert unnamed["k"].name == "k"


def test_family_shares_listeners(clock) -> None:
    template = make(clock)
    hosts = template.family()
    seen = []
    template.subscribe(lambda b, old, new: seen.append((b.name, new)))
    for _ in range(2):
        raise_in(hosts["x"], OSError())
    assert seen == [("t:x", "open")]


def test_family_members_have_their_own_listeners(clock) -> None:
    template = make(clock)
    hosts = template.family()
    a, b = hosts["a"], hosts["b"]
    heard_a, heard_b, heard_all = [], [], []
    a.subscribe(lambda br, old, new: heard_a.append((br.name, new)))
    unsubscribe_b = b.subscribe(lambda br, old, new: heard_b.append((br.name, new)))
    template.subscribe(lambda br, old, new: heard_all.append((br.name, new)))
    for _ in range(2):
        raise_in(b, OSError())
    a.force_open()
    template.force_open()
    assert heard_a == [("t:a", "forced_open")]
    assert heard_b == [("t:b", "open")]
    assert heard_all == [("t:b", "open"), ("t:a", "forced_open"), ("t", "forced_open")]
    unsubscribe_b()
    b.reset()
    assert heard_b == [("t:b", "open")]
    assert heard_all[-1] == ("t:b", "closed")
    nested = a.family()["n"]  # a member's own family: heard by the member and the template
    nested.force_open()
    assert heard_a[-1] == heard_all[-1] == ("t:a:n", "forced_open")


def test_family_evicts_the_least_recently_used_closed_breaker(clock) -> None:
    hosts = make(clock).family(max_size=3)
    first = hosts["a"]
    for _ in range(2):
        raise_in(first, OSError())  # "a" is open: kept
    hosts["b"]
    hosts["c"]
    hosts["d"]  # evicts "b", the oldest closed one
    assert list(hosts) == ["a", "c", "d"]
    assert hosts["a"] is first


def test_family_bound_holds_when_all_are_open(clock) -> None:
    hosts = make(clock).family(max_size=2)
    for key in ("a", "b"):
        for _ in range(2):
            raise_in(hosts[key], OSError())
    hosts["c"]
    assert list(hosts) == ["b", "c"]


def test_family_size_is_validated(clock) -> None:
    with pytest.raises(ValueError, match=r"max_size must be an int >= 1, got 0"):
        make(clock).family(max_size=0)
