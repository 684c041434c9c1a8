"""CircuitBreaker: configuration, shapes, trip models, half-open and generations."""

from __future__ import annotations

import inspect
import random

import pytest

from resilient import (
    Backoff,
    CircuitBreaker,
    CircuitOpenError,
    ConsecutiveFailures,
    FailureRate,
    HealthSignal,
    RejectedError,
)
from resilient._breaker_core import BreakerCore
from resilient.testing import FakeClock


def make(clock: FakeClock, **options) -> CircuitBreaker:
    options.setdefault("trip", ConsecutiveFailures(3))
    options.setdefault("backoff", Backoff(1.0, 2.0, 8.0, 0.0))
    return CircuitBreaker("t", clock=clock, **options)


def fail(breaker: CircuitBreaker, exc: type[BaseException] = OSError, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(exc), breaker:
            raise exc


def ok(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with breaker:
            pass


def rejected(breaker: CircuitBreaker) -> CircuitOpenError:
    with pytest.raises(CircuitOpenError) as info, breaker:
        pytest.fail("a rejected call ran")  # pragma: no cover
    return info.value


# --- configuration --------------------------------------------------------------------------------


def test_defaults_are_one_line() -> None:
    breaker = CircuitBreaker(name="payments")
    assert breaker.name == "payments"
    assert breaker.state == "closed"
    assert breaker.trip == FailureRate(0.5, calls=100, min_calls=20)
    assert repr(breaker) == "CircuitBreaker(name='payments', state='closed')"
    assert CircuitBreaker().name is None


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"trip": 5}, TypeError, "trip must be ConsecutiveFailures"),
        ({"backoff": 5.0}, TypeError, "backoff must be a Backoff"),
        ({"half_open_calls": 0}, ValueError, r"half_open_calls must be an int >= 1"),
        ({"half_open_calls": 1.5}, TypeError, r"half_open_calls must be an int >= 1"),
        ({"half_open_calls": True}, TypeError, r"half_open_calls"),
        ({"success_ratio": 0}, ValueError, r"success_ratio must be a number in \(0, 1\]"),
        ({"success_ratio": 1.5}, ValueError, r"success_ratio"),
        ({"success_ratio": "1"}, TypeError, r"success_ratio"),
        ({"half_open_timeout": 0}, ValueError, r"half_open_timeout must be a finite number > 0"),
        ({"half_open_timeout": float("inf")}, ValueError, r"half_open_timeout"),
        ({"record": 3}, TypeError, r"record must be an exception type, a predicate"),
        ({"ignore": (KeyError, "x")}, TypeError, r"ignore must be an exception type"),
        ({"record": int}, TypeError, r"record must be"),
        ({"failure_result": 3}, TypeError, r"failure_result must be a callable"),
        ({"clock": object()}, TypeError, r"clock must have a now\(\) method"),
        ({"rng": "seed"}, TypeError, r"rng must be a random.Random, an int seed or None"),
        ({"rng": True}, TypeError, r"rng must be"),
        ({"sink": object()}, TypeError, r"sink must have a record"),
        ({"name": 3}, TypeError, r"name must be a str or None"),
    ],
)
def test_bad_configuration_names_the_parameter(options, error, match) -> None:
    with pytest.raises(error, match=match):
        CircuitBreaker(**options)


@pytest.mark.parametrize(
    ("make_trip", "error", "match"),
    [
        (lambda: ConsecutiveFailures(0), ValueError, r"threshold must be an int >= 1, got 0"),
        (lambda: ConsecutiveFailures(2.0), TypeError, r"threshold must be an int >= 1"),
        (lambda: FailureRate(0), ValueError, r"threshold must be a number in \(0, 1\]"),
        (lambda: FailureRate(1.01), ValueError, r"threshold"),
        (lambda: FailureRate(calls=10, seconds=5), ValueError, "not both"),
        (lambda: FailureRate(calls=0), ValueError, r"calls must be an int >= 1"),
        (lambda: FailureRate(seconds=0), ValueError, r"seconds must be a finite number > 0"),
        (lambda: FailureRate(seconds=5, buckets=0), ValueError, r"buckets must be an int in"),
        (lambda: FailureRate(calls=10, min_calls=11), ValueError, r"min_calls.*\[1, calls=10\]"),
        (lambda: FailureRate(seconds=1, min_calls=0), ValueError, r"min_calls must be an int >= 1"),
        (lambda: FailureRate(slow_call_duration=0), ValueError, r"slow_call_duration must be"),
        (lambda: FailureRate(slow_call_rate=0), ValueError, r"slow_call_rate must be"),
        (lambda: HealthSignal(3), TypeError, r"healthy must be a callable"),  # type: ignore[arg-type]
        (lambda: HealthSignal(bool, interval=-1), ValueError, r"interval must be"),
    ],
)
def test_bad_trip_models_name_the_parameter(make_trip, error, match) -> None:
    with pytest.raises(error, match=match):
        make_trip()


def test_failure_rate_defaults() -> None:
    assert FailureRate().calls == 100
    assert FailureRate().min_calls == 20
    assert FailureRate(calls=5).min_calls == 5
    assert FailureRate(seconds=30).min_calls == 20
    assert FailureRate(seconds=30).calls is None


def test_rng_accepts_a_seed_or_an_instance(clock) -> None:
    jittery = Backoff(1.0, 2.0, 8.0, 0.5)
    waits = []
    for rng in (7, random.Random(7)):
        breaker = make(clock, trip=ConsecutiveFailures(1), backoff=jittery, rng=rng)
        fail(breaker)
        waits.append(breaker.statistics().retry_after)
    assert waits[0] == waits[1]
    assert 0.5 <= waits[0] <= 1.5


# --- shapes ---------------------------------------------------------------------------------------


def test_decorator_keeps_sync_async_and_methods(clock) -> None:
    breaker = make(clock)

    @breaker
    def add(x: int, y: int = 1) -> int:
        """Add."""
        return x + y

    @breaker
    async def aadd(x: int) -> int:
        return x + 1

    class Thing:
        @breaker
        def method(self, x: int) -> int:
            return x * 2

        @breaker
        @classmethod
        def klass(cls, x: int) -> int:
            return x * 3

        @breaker
        @staticmethod
        def static(x: int) -> int:
            return x * 4

    assert add(1) == 2
    assert add.__doc__ == "Add."
    assert str(inspect.signature(add)) == "(x: 'int', y: 'int' = 1) -> 'int'"
    assert inspect.iscoroutinefunction(aadd)
    assert Thing().method(2) == 4
    assert Thing.klass(2) == 6
    assert Thing.static(2) == 8
    assert breaker.statistics().successes == 4


def test_generators_are_refused(clock) -> None:
    def gen():  # pragma: no cover - never run
        yield 1

    with pytest.raises(TypeError, match="generator"):
        make(clock)(gen)


@pytest.mark.anyio
async def test_async_shapes(clock) -> None:
    breaker = make(clock, trip=ConsecutiveFailures(2))

    @breaker
    async def boom() -> None:
        raise OSError

    async with breaker:
        pass
    for _ in range(2):
        with pytest.raises(OSError):
            await boom()
    with pytest.raises(CircuitOpenError):
        async with breaker:
            pass  # pragma: no cover
    with pytest.raises(CircuitOpenError):
        await boom()
    stats = breaker.statistics()
    assert (stats.successes, stats.failures, stats.rejected) == (1, 2, 2)


# --- consecutive failures and backoff -------------------------------------------------------------


def test_consecutive_failures_trip_and_a_success_restarts_the_count(clock) -> None:
    breaker = make(clock)
    fail(breaker, times=2)
    ok(breaker)
    fail(breaker, times=2)
    assert breaker.state == "closed"
    assert breaker.statistics().consecutive_failures == 2
    fail(breaker)
    assert breaker.state == "open"
    error = rejected(breaker)
    assert error.name == "t"
    assert error.retry_after == 1.0
    assert str(error) == "'t': circuit open; retry after 1.000s"
    clock.advance(0.25)
    assert rejected(breaker).retry_after == 0.75


def test_backoff_grows_per_reopen_and_resets_on_close(clock) -> None:
    breaker = make(clock)
    fail(breaker, times=3)
    waits = []
    for _ in range(5):
        waits.append(breaker.statistics().retry_after)
        clock.advance(waits[-1])
        fail(breaker)  # the probe fails: open again, longer
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert breaker.statistics().openings == 6
    clock.advance(8.0)
    ok(breaker)
    assert breaker.state == "closed"
    assert breaker.statistics().openings == 0
    fail(breaker, times=3)
    assert breaker.statistics().retry_after == 1.0


# --- failure rate ---------------------------------------------------------------------------------


def test_failure_rate_waits_for_min_calls(clock) -> None:
    breaker = make(clock, trip=FailureRate(0.5, calls=10, min_calls=4))
    fail(breaker, times=3)
    assert breaker.state == "closed"
    fail(breaker)
    assert breaker.state == "open"


def test_failure_rate_count_window_slides(clock) -> None:
    breaker = make(clock, trip=FailureRate(0.5, calls=4, min_calls=4))
    fail(breaker)
    ok(breaker, times=3)
    fail(breaker)  # window: ok ok ok fail -> 25 %
    stats = breaker.statistics()
    assert (stats.window_calls, stats.window_failures, stats.failure_rate) == (4, 1, 0.25)
    fail(breaker)  # ok ok fail fail -> 50 %
    assert breaker.state == "open"


def test_many_lock_free_successes_fill_the_window(clock) -> None:
    breaker = make(clock, trip=FailureRate(0.5, calls=4, min_calls=2))
    fail(breaker)
    ok(breaker, times=50)
    assert breaker.statistics().window_calls == 4
    assert breaker.statistics().failure_rate == 0
    fail(breaker)
    fail(breaker)
    assert breaker.state == "open"  # ok ok fail fail


def test_failure_rate_time_window_forgets_old_calls(clock) -> None:
    breaker = make(clock, trip=FailureRate(0.5, seconds=10, buckets=10, min_calls=2))
    fail(breaker)
    clock.advance(10.5)
    assert breaker.statistics().window_calls == 0
    fail(breaker)
    ok(breaker, times=2)
    clock.advance(5)
    fail(breaker)  # 2 failures, 2 successes in the last 10 s
    assert breaker.state == "open"


def test_time_window_successes_without_the_lock_still_age_out(clock) -> None:
    breaker = make(clock, trip=FailureRate(0.5, seconds=10, buckets=10, min_calls=2))
    ok(breaker, times=10)  # the first of a slice takes the lock, the others count lock-free
    assert breaker.statistics().window_calls == 10
    clock.advance(5.0)
    fail(breaker, times=9)  # 9 of 19
    assert breaker.state == "closed"
    clock.advance(5.5)  # the slice of the ten successes leaves the window
    stats = breaker.statistics()
    assert (stats.window_calls, stats.window_failures, stats.successes) == (9, 9, 10)
    fail(breaker)
    assert breaker.state == "open"


def test_slow_calls_are_a_second_signal(clock) -> None:
    trip = FailureRate(0.9, calls=10, min_calls=2, slow_call_duration=1.0, slow_call_rate=0.5)
    breaker = make(clock, trip=trip)
    with breaker:
        clock.advance(1.0)  # not slower than the threshold
    with breaker:
        clock.advance(1.5)
    assert breaker.state == "open"
    stats = breaker.statistics()
    # While open, the window still shows why it tripped; it starts afresh when it closes.
    assert (stats.successes, stats.slow_calls, stats.slow_call_rate) == (1, 1, 0.5)


def test_slow_probe_counts_as_failure(clock) -> None:
    trip = FailureRate(0.5, calls=2, min_calls=1, slow_call_duration=1.0)
    breaker = make(clock, trip=trip)
    fail(breaker)
    clock.advance(1.0)
    with breaker:
        clock.advance(2.0)
    assert breaker.state == "open"
    assert breaker.statistics().slow_calls == 1


def test_slow_failure_counts_once_as_failure(clock) -> None:
    trip = FailureRate(1.0, calls=5, min_calls=5, slow_call_duration=1.0)
    breaker = make(clock, trip=trip)

    def slow_failure() -> None:
        clock.advance(2.0)
        raise OSError

    with pytest.raises(OSError):
        breaker(slow_failure)()
    stats = breaker.statistics()
    assert (stats.failures, stats.slow_calls, stats.window_slow_calls) == (1, 0, 1)


# --- half-open ------------------------------------------------------------------------------------


def test_half_open_admits_n_probes_and_closes_on_the_ratio(clock) -> None:
    breaker = make(clock, half_open_calls=3, success_ratio=0.6)
    fail(breaker, times=3)
    clock.advance(1.0)
    tokens = [breaker._enter() for _ in range(3)]
    assert breaker.state == "half_open"
    assert breaker.statistics().probes_in_flight == 3
    rejected(breaker)
    assert breaker.statistics().rejected == 1
    breaker._exit_error(tokens[0], OSError())
    breaker._exit_ok(tokens[1], None)
    assert breaker.state == "half_open"
    breaker._exit_ok(tokens[2], None)
    assert breaker.state == "closed"


def test_half_open_reopens_as_soon_as_the_ratio_is_out_of_reach(clock) -> None:
    breaker = make(clock, half_open_calls=3, success_ratio=0.6)
    fail(breaker, times=3)
    clock.advance(1.0)
    tokens = [breaker._enter() for _ in range(3)]
    breaker._exit_error(tokens[0], OSError())
    breaker._exit_error(tokens[1], OSError())
    assert breaker.state == "open"
    assert breaker.statistics().retry_after == 2.0
    breaker._exit_ok(tokens[2], None)  # stale: no effect
    assert breaker.state == "open"


def test_stuck_probe_cannot_wedge_half_open(clock) -> None:
    breaker = make(clock, half_open_timeout=5.0)
    fail(breaker, times=3)
    clock.advance(1.0)
    stuck = breaker._enter()
    clock.advance(4.9)
    assert rejected(breaker).retry_after is None
    clock.advance(0.1)
    assert rejected(breaker).retry_after == 2.0
    assert breaker.state == "open"
    breaker._exit_ok(stuck, None)  # finally returns: stale
    assert breaker.state == "open"


def test_without_half_open_timeout_a_probe_may_take_forever(clock) -> None:
    breaker = make(clock, half_open_timeout=None)
    fail(breaker, times=3)
    clock.advance(1.0)
    probe = breaker._enter()
    clock.advance(10_000)
    rejected(breaker)
    breaker._exit_ok(probe, None)
    assert breaker.state == "closed"


def test_a_call_from_before_a_state_change_never_moves_the_state(clock) -> None:
    breaker = make(clock)
    slow = breaker._enter()  # admitted while closed
    fail(breaker, times=3)
    clock.advance(1.0)
    probe = breaker._enter()
    breaker._exit_error(slow, OSError())  # would re-open it, if it counted
    assert breaker.state == "half_open"
    breaker._exit_ok(probe, None)
    assert breaker.state == "closed"
    early = breaker._enter()
    breaker.reset()
    breaker._exit_error(early, OSError())
    assert breaker.statistics().consecutive_failures == 0
    assert breaker.statistics().failures == 5  # stale results are still counted


def test_stale_success_does_not_reset_the_streak(clock) -> None:
    breaker = make(clock)
    early = breaker._enter()
    fail(breaker, times=3)
    clock.advance(1)
    ok(breaker)
    fail(breaker, times=2)
    breaker._exit_ok(early, None)
    assert breaker.statistics().consecutive_failures == 2


def test_opened_while_waiting_for_the_lock_rejects(clock) -> None:
    breaker = make(clock, trip=ConsecutiveFailures(1))
    fail(breaker)
    clock.advance(1.0)
    # A caller that saw the wait over, but found the circuit open again under the lock.
    breaker._open_until = 5.0
    with pytest.raises(CircuitOpenError) as info:
        breaker._probe(clock.now())
    assert info.value.retry_after == 4.0


def test_state_moved_on_while_waiting_for_the_lock_starts_again(clock) -> None:
    breaker = make(clock)  # a caller saw OPEN; by the time it holds the lock, it is closed
    token = breaker._probe(clock.now())
    assert token == breaker._gen


# --- RejectedError from inside --------------------------------------------------------------------


def test_inner_rejection_is_neither_success_nor_failure(clock) -> None:
    breaker = make(clock, trip=ConsecutiveFailures(1))
    for _ in range(3):
        with pytest.raises(RejectedError), breaker:
            raise RejectedError("inner", 1.0)
    stats = breaker.statistics()
    assert (stats.state, stats.ignored, stats.failures, stats.successes) == ("closed", 3, 0, 0)


# --- races, replayed deterministically ----------------------------------------------------------


class RacingClock(FakeClock):
    """A clock that runs `race()` once, on the next reading: another thread got in just then."""

    def __init__(self) -> None:
        super().__init__()
        self.race = None

    def now(self) -> float:
        race, self.race = self.race, None
        if race is not None:
            race()
        return super().now()


def test_time_window_success_that_raced_a_trip_is_only_counted() -> None:
    clock = RacingClock()
    breaker = make(clock, trip=FailureRate(0.5, seconds=10, min_calls=1))
    token = breaker._enter()
    clock.race = breaker.force_open
    breaker._exit_ok(token, None)
    stats = breaker.statistics()
    assert (stats.successes, stats.window_calls) == (1, 0)


def test_success_that_raced_a_trip_leaves_the_streak_alone(clock) -> None:
    breaker = make(clock)
    token = breaker._enter()
    fail(breaker, times=3)
    clock.advance(1.0)
    ok(breaker)
    fail(breaker, times=2)
    breaker._clear_streak(token)  # saw the old generation's fast token, then lost the race
    assert breaker.statistics().consecutive_failures == 2


@pytest.mark.parametrize(
    "trip",
    [ConsecutiveFailures(3), FailureRate(0.5, calls=4, min_calls=4), FailureRate(0.5, seconds=10)],
)
def test_without_the_gil_every_outcome_takes_the_lock(clock, monkeypatch, trip) -> None:
    monkeypatch.setattr("resilient._breaker_state.LOCK_FREE", False)
    monkeypatch.setattr("resilient._breaker_core.LOCK_FREE", False)
    breaker = make(clock, trip=trip)
    ok(breaker, times=3)
    fail(breaker)
    assert repr(breaker._n_success_fast) == "count(0)"  # the lock-free counter was never used
    stats = breaker.statistics()
    assert (stats.successes, stats.failures) == (3, 1)
    if isinstance(trip, FailureRate):
        assert (stats.window_calls, stats.window_failures) == (4, 1)


def test_a_lock_free_success_does_not_ask_the_window_its_type() -> None:
    # `_setup` answers that once (`_window_needs_now`); the per-call path must not ask again.
    names = BreakerCore._record.__code__.co_names
    assert "isinstance" not in names
    assert "CountWindow" not in names
