"""A Hypothesis state machine drives CircuitBreaker against a small reference model."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from resilient import Backoff, CircuitBreaker, CircuitOpenError, ConsecutiveFailures, FailureRate
from resilient.testing import FakeClock


class RejectedError(Exception):
    def __init__(self, retry_after: float | None) -> None:
        self.retry_after = retry_after


class Model:
    """The breaker's rules, written as plainly as possible (no windows, no locks, no tricks)."""

    def __init__(self, trip: Any, probes: int, needed: int, timeout: float | None) -> None:
        self.trip = trip
        self.probes, self.needed, self.timeout = probes, needed, timeout
        self.state = "closed"
        self.gen = 0
        self.attempts = 0
        self.open_until = 0.0
        self.streak = 0
        self.window: list[tuple[bool, bool]] = []
        self.probes_left = self.ok = self.bad = 0
        self.since = 0.0
        self.counts = {"success": 0, "failure": 0, "slow": 0, "rejected": 0, "ignored": 0}

    def to(self, new: str, now: float) -> None:
        self.state = new
        self.gen += 1
        if new == "half_open":
            self.probes_left, self.ok, self.bad, self.since = self.probes, 0, 0, now
        elif new in ("closed", "metrics_only"):
            self.streak = 0
            self.window = []

    def open(self, now: float) -> None:
        self.attempts += 1
        self.open_until = now + min(8.0, 2.0 ** (self.attempts - 1))
        self.to("open", now)

    def reject(self, retry_after: float | None) -> RejectedError:
        self.counts["rejected"] += 1
        return RejectedError(retry_after)

    def enter(self, now: float) -> int:
        if self.state in ("closed", "metrics_only"):
            return self.gen
        if self.state == "disabled":
            return -1
        if self.state == "forced_open":
            raise self.reject(None)
        if self.state == "open":
            if self.open_until > now:
                raise self.reject(self.open_until - now)
            self.to("half_open", now)
        if self.probes_left:
            self.probes_left -= 1
            return self.gen
        if self.timeout is not None and now - self.since >= self.timeout:
            self.open(now)
            raise self.reject(self.open_until - now)
        raise self.reject(None)

    def trips(self, failed: bool, slow: bool) -> bool:
        if isinstance(self.trip, ConsecutiveFailures):
            self.streak = self.streak + 1 if failed else 0
            return failed and self.streak >= self.trip.threshold
        self.window = [*self.window, (failed, slow)][-(self.trip.calls or 0) :]
        calls = len(self.window)
        fails = sum(f for f, _ in self.window)
        slows = sum(s for _, s in self.window)
        too_slow = self.trip.slow_call_duration is not None and (
            slows >= self.trip.slow_call_rate * calls
        )
        return (
            (failed or slow)
            and calls >= (self.trip.min_calls or 0)
            and (fails >= self.trip.threshold * calls or too_slow)
        )

    def finish(self, gen: int, outcome: str, now: float, took: float) -> None:
        if gen == -1:
            return
        if outcome == "cancel":
            self.counts["ignored"] += 1
            if gen == self.gen and self.state == "half_open":
                self.probes_left += 1
            return
        failed = outcome == "fail"
        limit = getattr(self.trip, "slow_call_duration", None)
        slow = limit is not None and took > limit
        self.counts["failure" if failed else "slow" if slow else "success"] += 1
        if gen != self.gen:
            return
        if self.state in ("closed", "metrics_only"):
            if self.trips(failed, slow) and self.state == "closed":
                self.open(now)
        elif self.state == "half_open":
            if failed or slow:
                self.bad += 1
                if self.bad > self.probes - self.needed:
                    self.open(now)
            else:
                self.ok += 1
                if self.ok >= self.needed:
                    self.attempts = 0
                    self.to("closed", now)

    def manual(self, new: str, now: float, *, reset: bool = False) -> None:
        if self.state != new or reset:
            self.to(new, now)
        if reset:
            self.attempts = 0


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.calls: list[tuple[Any, int, float]] = []

    @initialize(
        trip=st.one_of(
            st.builds(ConsecutiveFailures, st.integers(1, 4)),
            st.integers(1, 6).flatmap(
                lambda size: st.builds(
                    FailureRate,
                    st.sampled_from([0.25, 0.5, 1.0]),
                    calls=st.just(size),
                    min_calls=st.integers(1, size),
                    slow_call_duration=st.sampled_from([None, 4.0]),
                    slow_call_rate=st.sampled_from([0.5, 1.0]),
                )
            ),
        ),
        probes=st.integers(1, 3),
        ratio=st.sampled_from([0.5, 1.0]),
        timeout=st.sampled_from([None, 3.0]),
    )
    def setup(self, trip: Any, probes: int, ratio: float, timeout: float | None) -> None:
        self.breaker = CircuitBreaker(
            "m",
            trip=trip,
            backoff=Backoff(1.0, 2.0, 8.0, 0.0),
            half_open_calls=probes,
            success_ratio=ratio,
            half_open_timeout=timeout,
            clock=self.clock,
        )
        needed = max(1, -(-probes * ratio // 1))  # ceil
        self.model = Model(trip, probes, int(needed), timeout)

    @rule()
    def start(self) -> None:
        now = self.clock.now()
        try:
            expected = self.model.enter(now)
        except RejectedError as rejection:
            rejected = rejection
        else:
            token = self.breaker._enter()  # must not raise
            self.calls.append((token, expected, now))
            return
        with pytest.raises(CircuitOpenError) as error:
            self.breaker._enter()
        assert error.value.retry_after == rejected.retry_after

    @precondition(lambda self: self.calls)
    @rule(index=st.integers(0, 100), outcome=st.sampled_from(["ok", "fail", "cancel"]))
    def finish(self, index: int, outcome: str) -> None:
        token, gen, start = self.calls.pop(index % len(self.calls))
        if outcome == "ok":
            self.breaker._exit_ok(token, None)
        else:
            self.breaker._exit_error(token, OSError() if outcome == "fail" else KeyboardInterrupt())
        self.model.finish(gen, outcome, self.clock.now(), self.clock.now() - start)

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 3.0, 5.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(action=st.sampled_from(["force_open", "force_closed", "disable", "metrics_only"]))
    def manual(self, action: str) -> None:
        getattr(self.breaker, action)()
        state = {"force_open": "forced_open", "force_closed": "closed", "disable": "disabled"}.get(
            action, action
        )
        self.model.manual(state, self.clock.now())

    @rule()
    def reset(self) -> None:
        self.breaker.reset()
        self.model.manual("closed", self.clock.now(), reset=True)

    @invariant()
    def agrees_with_the_model(self) -> None:
        if not hasattr(self, "model"):
            return
        model, stats = self.model, self.breaker.statistics()
        assert self.breaker._gen == model.gen
        assert stats.state == model.state
        assert stats.successes == model.counts["success"]
        assert stats.failures == model.counts["failure"]
        assert stats.slow_calls == model.counts["slow"]
        assert stats.rejected == model.counts["rejected"]
        assert stats.ignored == model.counts["ignored"]
        assert stats.openings == model.attempts
        assert stats.consecutive_failures == model.streak
        assert stats.window_calls == len(model.window)
        assert stats.window_failures == sum(f for f, _ in model.window)
        assert stats.window_slow_calls == sum(s for _, s in model.window)
        if model.state == "open":
            assert stats.retry_after == max(0.0, model.open_until - self.clock.now())
        else:
            assert stats.retry_after is None
        if model.state == "half_open":
            in_flight = model.probes - model.probes_left - model.ok - model.bad
            assert stats.probes_in_flight == in_flight
            assert 0 <= in_flight <= model.probes
        else:
            assert stats.probes_in_flight == 0


BreakerMachine.TestCase.settings = settings(
    max_examples=500,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBreakerMachine = BreakerMachine.TestCase
