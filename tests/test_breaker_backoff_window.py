"""Backoff and the sliding windows: properties against brute-force models."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient import Backoff
from resilient._window import CountWindow, TimeWindow


# --- Backoff --------------------------------------------------------------------------------------


backoffs = st.builds(
    lambda initial, growth, span, jitter: Backoff(initial, growth, initial * span, jitter),
    initial=st.floats(0.001, 1000),
    growth=st.floats(1, 10),
    span=st.floats(1, 1000),
    jitter=st.floats(0, 0.99),
)


@given(backoffs, st.integers(1, 10_000), st.integers(0, 2**32))
def test_delay_is_bounded_and_within_the_jitter_range(backoff, attempt, seed) -> None:
    delay = backoff.delay(attempt, random.Random(seed))
    growth = (attempt - 1) * math.log(backoff.multiplier)  # in logs: m ** n overflows
    cap = math.log(backoff.maximum / backoff.initial)
    base = backoff.maximum if growth >= cap else backoff.initial * math.exp(growth)
    assert math.isfinite(delay)
    assert (
        base * (1 - backoff.jitter) * (1 - 1e-9)
        <= delay
        <= base * (1 + backoff.jitter) * (1 + 1e-9)
    )
    assert delay <= backoff.maximum * (1 + backoff.jitter) * (1 + 1e-9)


@given(backoffs, st.integers(1, 60))
def test_delay_without_jitter_grows_monotonically_to_the_cap(backoff, attempt) -> None:
    flat = Backoff(backoff.initial, backoff.multiplier, backoff.maximum, 0.0)
    rng = random.Random(0)
    assert flat.delay(attempt, rng) <= flat.delay(attempt + 1, rng)
    assert flat.delay(attempt, rng) <= flat.maximum
    assert flat.delay(1, rng) == flat.initial


def test_delay_formula() -> None:
    backoff = Backoff(initial=0.5, multiplier=1.5, maximum=3.0, jitter=0.0)
    rng = random.Random(0)
    assert [backoff.delay(n, rng) for n in range(1, 7)] == [0.5, 0.75, 1.125, 1.6875, 2.53125, 3.0]
    assert Backoff(2.0, 1.0, 5.0, 0.0).delay(100, rng) == 2.0


def test_jitter_spreads_the_delays() -> None:
    backoff = Backoff(10.0, 2.0, 100.0, 0.5)
    rng = random.Random(1)
    delays = [backoff.delay(1, rng) for _ in range(2000)]
    assert min(delays) < 5.5
    assert max(delays) > 14.5
    assert all(5.0 <= d <= 15.0 for d in delays)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"initial": 0}, ValueError, r"initial must be a finite number > 0, got 0"),
        ({"initial": float("nan")}, ValueError, r"initial"),
        ({"initial": "1"}, TypeError, r"initial must be a finite number > 0"),
        ({"multiplier": 0.5}, ValueError, r"multiplier must be a finite number >= 1"),
        (
            {"maximum": 1.0, "initial": 2.0},
            ValueError,
            r"maximum must be a finite number >= initial",
        ),
        ({"maximum": float("inf")}, ValueError, r"maximum"),
        ({"jitter": 1.0}, ValueError, r"jitter must be a number in \[0, 1\)"),
        ({"jitter": -0.1}, ValueError, r"jitter"),
        ({"jitter": True}, TypeError, r"jitter"),
    ],
)
def test_bad_backoff_names_the_parameter(options, error, match) -> None:
    with pytest.raises(error, match=match):
        Backoff(**options)


def test_attempt_must_be_positive() -> None:
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        Backoff().delay(0, random.Random())


def test_backoff_is_a_frozen_value() -> None:
    backoff = Backoff()
    assert backoff == Backoff(5.0, 2.0, 300.0, 0.5)
    with pytest.raises(AttributeError):
        backoff.initial = 1.0  # type: ignore[misc]


# --- CountWindow ----------------------------------------------------------------------------------

outcome = st.tuples(st.booleans(), st.booleans())


@given(st.integers(1, 20), st.lists(st.one_of(outcome, st.integers(1, 30)), max_size=100))
def test_count_window_matches_the_last_n_outcomes(size, ops) -> None:
    window = CountWindow(size)
    history: list[tuple[bool, bool]] = []
    for op in ops:
        if isinstance(op, int):
            window.record_successes(op)
            history.extend([(False, False)] * op)
        else:
            window.record(0.0, *op)
            history.append(op)
        last = history[-size:]
        assert window.calls == len(last)
        assert window.failures == sum(f for f, _ in last)
        assert window.slow == sum(s for _, s in last)


def test_count_window_clear_and_repr() -> None:
    window = CountWindow(3)
    window.record(0.0, failed=True, slow=True)
    window.advance(100.0)  # a count window does not age
    assert (window.calls, window.failures, window.slow) == (1, 1, 1)
    assert repr(window) == "CountWindow(size=3, calls=1, failures=1)"
    window.clear()
    assert (window.calls, window.failures, window.slow) == (0, 0, 0)


# --- TimeWindow -----------------------------------------------------------------------------------


@given(
    st.sampled_from([1.0, 10.0, 60.0]),
    st.integers(1, 12),
    st.lists(st.tuples(st.floats(0, 30), st.booleans(), st.booleans()), max_size=60),
)
def test_time_window_keeps_exactly_the_live_buckets(seconds, buckets, steps) -> None:
    window = TimeWindow(seconds, buckets)
    width = seconds / buckets
    now = 0.0
    history: list[tuple[float, bool, bool]] = []
    for dt, failed, slow in steps:
        now += dt
        window.record(now, failed, slow)
        history.append((now, failed, slow))
        # Live: the slice of the call is one of the last `buckets` slices, the current one included.
        current = now // width
        live = [(f, s) for t, f, s in history if current - (t // width) < buckets]
        assert window.calls == len(live)
        assert window.failures == sum(f for f, _ in live)
        assert window.slow == sum(s for _, s in live)


def test_time_window_advances_lazily(clock) -> None:
    window = TimeWindow(10.0, 10)
    window.record(clock.now(), failed=True, slow=False)
    clock.advance(5.0)
    window.record(clock.now(), failed=False, slow=True)
    clock.advance(5.5)  # the first slice is out, the second is not
    window.advance(clock.now())
    assert (window.calls, window.failures, window.slow) == (1, 0, 1)
    window.advance(clock.now() - 3)  # time never runs backwards for a window
    assert window.calls == 1
    clock.advance(100.0)
    window.advance(clock.now())
    assert window.calls == 0
    window.record(clock.now(), failed=True, slow=False)
    window.record_successes(3)  # into the newest slice
    assert (window.calls, window.failures) == (4, 1)
    assert window.epoch == clock.now() // window.width
    clock.advance(10.0)
    window.advance(clock.now())
    assert window.calls == 0
    window.record(clock.now(), failed=True, slow=False)
    assert repr(window) == "TimeWindow(seconds=10.0, buckets=10, calls=1, failures=1)"
    window.clear()
    assert (window.calls, window.failures) == (0, 0)
