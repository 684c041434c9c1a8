"""A Hypothesis state machine feeds the adaptive limit's controller arbitrary windows.

`GradientController` is a pure function of the windows it is fed, so Hypothesis can drive it
through any sequence (slow start, drops, idle windows, queues, a service that becomes faster or
slower) and check the rules that must hold whatever happens.
"""

from __future__ import annotations

import math

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from resilient._gradient import GradientController


latencies = st.floats(min_value=1e-4, max_value=10.0, allow_nan=False)


class Controller(RuleBasedStateMachine):
    """Windows of every kind, against the invariants of the limit."""

    def __init__(self) -> None:
        super().__init__()
        self.c: GradientController | None = None

    @initialize(
        initial=st.integers(1, 500),
        floor=st.integers(1, 20),
        ceiling=st.integers(20, 1000),
        tolerance=st.floats(1.0, 2.0),
        slow_start=st.booleans(),
    )
    def create(
        self, initial: int, floor: int, ceiling: int, tolerance: float, slow_start: bool
    ) -> None:
        self.c = GradientController(
            initial_limit=min(max(initial, floor), ceiling),
            min_limit=floor,
            max_limit=ceiling,
            smoothing=0.2,
            tolerance=tolerance,
            backoff=0.9,
            history=10,
            memory=300,
            slow_start=slow_start,
        )

    @property
    def controller(self) -> GradientController:
        assert self.c is not None
        return self.c

    @rule(
        rtt=latencies,
        error=st.floats(0.0, 1.0),
        throughput=st.floats(0.0, 1e5),
        used=st.floats(0.0, 1.0),
        overloaded=st.booleans(),
    )
    def window(
        self, rtt: float, error: float, throughput: float, used: float, overloaded: bool
    ) -> None:
        c = self.controller
        before, baseline = c.limit, c.baseline
        inflight = round(used * c.limit)
        was_slow = c.slow_start
        after = c.update(
            rtt=rtt,
            error=error,
            throughput=throughput,
            inflight=inflight,
            drops=0,
            overloaded=overloaded,
        )
        if after > 1.5 * before:  # only slow start doubles, on a saturated window, not overloaded
            assert was_slow
            assert inflight >= 0.9 * before
            assert not overloaded
        if inflight * 2 < before:
            # The limit was not the bottleneck: it may only fall (a queue anyway), never rise.
            assert after <= before
        if baseline is not None:
            assert c.baseline is not None
            if c.baseline != baseline:  # lowered, or re-learned: to this window's latency
                assert c.baseline == rtt
            if inflight < 0.9 * before:  # re-learning needs a saturated window
                assert c.baseline <= baseline

    @rule(drops=st.integers(1, 50), used=st.floats(0.0, 1.0))
    def dropped(self, drops: int, used: float) -> None:
        c = self.controller
        before = c.limit
        after = c.update(rtt=0.05, throughput=100, inflight=round(used * before), drops=drops)
        assert after <= before  # timeouts never raise the limit
        assert not c.slow_start

    @rule()
    def empty(self) -> None:
        c = self.controller
        before = c.limit
        assert c.update(rtt=None, throughput=0, inflight=0, drops=0) == before

    @invariant()
    def limit_within_bounds(self) -> None:
        if self.c is not None:
            assert math.isfinite(self.c.limit)
            assert self.c.min_limit <= self.c.limit <= self.c.max_limit

    @invariant()
    def baseline_positive(self) -> None:
        if self.c is not None and self.c.baseline is not None:
            assert self.c.baseline > 0


Controller.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestController = Controller.TestCase
