"""AdaptiveConcurrencyLimit: the gradient controller alone, then the limit driven on a FakeClock."""

from __future__ import annotations

import asyncio
import itertools
import math
import threading

import anyio
import anyio.lowlevel
import pytest

from resilient import AdaptiveConcurrencyLimit, ConcurrencyLimitError
from resilient._gradient import GradientController
from resilient._overload import OVERLOAD_MIN
from resilient.metrics import CONCURRENCY_LIMIT_LIMIT
from resilient.testing import FakeClock, capture_metrics


async def until(predicate: object) -> None:
    for _ in range(5000):
        if predicate():  # type: ignore[operator]
            return
        await anyio.sleep(0.001)
    raise AssertionError("condition never became true")


def controller(**overrides: float) -> GradientController:
    options: dict[str, float] = {
        "initial_limit": 20,
        "min_limit": 1,
        "max_limit": 1000,
        "smoothing": 0.2,
        "tolerance": 1.0,
        "backoff": 0.9,
        "history": 10,
        "memory": 300,
    }
    options.update(overrides)
    return GradientController(**options)  # type: ignore[arg-type]


def feed(c: GradientController, windows: int, rtt: object, throughput: object) -> list[float]:
    """Feed saturated windows (1 s apart); rtt and throughput are functions of the limit."""
    limits = []
    for _ in range(windows):
        limit = c.limit
        c.update(
            rtt=rtt(limit),  # type: ignore[operator]
            throughput=throughput(limit),  # type: ignore[operator]
            inflight=math.ceil(limit),
            drops=0,
        )
        limits.append(c.limit)
    return limits


# --- the controller ---------------------------------------------------------------------------


def test_limit_rises_while_latency_is_flat_and_throughput_scales() -> None:
    c = controller()
    limits = feed(c, 30, rtt=lambda _: 0.010, throughput=lambda n: n * 100)
    assert all(b > a for a, b in itertools.pairwise(limits))
    assert limits[-1] > 30


def test_limit_falls_when_latency_climbs() -> None:
    # A service with 20 workers: past 20 in flight, calls queue and latency grows.
    c = controller(initial_limit=100)
    feed(c, 1, rtt=lambda _: 0.010, throughput=lambda n: 2000)
    limits = feed(c, 10, rtt=lambda n: 0.010 * n / 20, throughput=lambda n: 2000)
    assert all(b < a for a, b in itertools.pairwise(limits))
    assert limits[-1] < 50


def test_limit_settles_at_the_knee_of_a_processor_sharing_service() -> None:
    # Latency flat up to 32 in flight, proportional beyond: Little's law puts the target at
    # 32 * tolerance + sqrt(limit).
    knee, base = 32, 0.010
    c = controller(initial_limit=5)
    limits = feed(
        c,
        200,
        rtt=lambda n: base * max(1.0, n / knee),
        throughput=lambda n: min(n, knee) / base,
    )
    assert 32 <= limits[-1] <= 32 + math.sqrt(40) + 1
    assert max(limits[-50:]) - min(limits[-50:]) < 1


def test_limit_stays_within_bounds() -> None:
    c = controller(initial_limit=10, min_limit=5, max_limit=40)
    limits = feed(c, 100, rtt=lambda _: 0.010, throughput=lambda n: n * 100)
    assert max(limits) == 40
    limits = []
    for i in range(100):  # latency climbs window after window, throughput does not move
        c.update(rtt=0.010 * 1.2**i, throughput=100, inflight=math.ceil(c.limit), drops=0)
        limits.append(c.limit)
    assert min(limits) == 5
    assert all(5 <= x <= 40 for x in limits)


def test_throughput_guard_stops_the_climb() -> None:
    # Flat latency (as with a drifted baseline or a tolerance that hides the queue) would let the
    # gradient raise the limit forever; throughput that no longer rises stops it.
    c = controller(initial_limit=20)
    limits = feed(c, 200, rtt=lambda _: 0.010, throughput=lambda n: min(n, 30) * 100)
    assert max(limits[-150:]) < 30 * 1.5  # bounded: probes a little above the knee, no more
    assert min(limits[-150:]) >= 30
    unguarded = feed(
        controller(initial_limit=20), 60, rtt=lambda _: 0.010, throughput=lambda n: n * 100
    )
    assert unguarded[-1] > 60  # throughput kept rising: so did the limit


def test_throughput_guard_backs_off_when_throughput_falls() -> None:
    c = controller(initial_limit=20)
    limits = feed(c, 40, rtt=lambda _: 0.010, throughput=lambda n: 2000 * (20 / n) ** 2)
    assert c.elasticity() is None or c.elasticity() < 0  # type: ignore[operator]
    assert min(limits) < 20 * 1.25
    assert any(b < a for a, b in itertools.pairwise(limits))


def test_drops_back_off_and_idle_windows_teach_only_the_baseline() -> None:
    c = controller(initial_limit=50)
    assert c.update(rtt=0.01, throughput=100, inflight=50, drops=2) == pytest.approx(45)
    assert c.update(rtt=None, throughput=0, inflight=45, drops=0) == pytest.approx(45)
    assert c.baseline is None
    # An idle window leaves the limit alone, but its latency is the one without a queue.
    assert c.update(rtt=0.01, throughput=100, inflight=10, drops=0) == pytest.approx(45)
    assert c.baseline == pytest.approx(0.01)
    # So the first saturated window, five times slower, reads as a queue: the limit falls.
    assert c.update(rtt=0.05, throughput=900, inflight=45, drops=0) < 45


def test_a_queue_below_the_limit_cuts_it_to_the_knee_at_once() -> None:
    # A limit far above the knee (100) that is never full: calls queue for the CPU they share.
    c = controller(initial_limit=100, tolerance=1.3)
    c.update(rtt=0.010, throughput=100, inflight=5, drops=0)  # no queue: sets the baseline
    # 40 in flight at 4x the baseline: Little's law puts the knee near 40 * 1.3 / 4 = 13; the
    # gradient is clamped at 0.5, so one window cuts to 40 * 0.5 + headroom (4).
    assert c.update(rtt=0.040, throughput=1000, inflight=40, drops=0) == pytest.approx(24)
    # No queue and permits unused: the limit stays where it is.
    assert c.update(rtt=0.010, throughput=1000, inflight=10, drops=0) == pytest.approx(24)


def test_slower_work_under_light_load_is_not_a_queue() -> None:
    # Two calls in flight of 100 permits: a window 3x slower is a slower dependency, not calls
    # queueing for each other. Cutting to 2 * gradient would shed everything once traffic came.
    c = controller(initial_limit=100, tolerance=1.3, slow_start=True)
    c.update(rtt=0.020, throughput=50, inflight=2, drops=0)
    for _ in range(40):
        assert c.update(rtt=0.060, throughput=50, inflight=3, drops=0) == 100
    assert c.slow_start


def test_an_overloaded_first_window_is_not_taken_for_the_baseline_after_an_idle_one() -> None:
    # Slow start from above the knee: an idle window first (low load), then a burst.
    c = controller(initial_limit=100, slow_start=True)
    c.update(rtt=0.007, throughput=250, inflight=4, drops=0)
    assert c.update(rtt=0.2, throughput=500, inflight=100, drops=0) <= 60  # halved + headroom
    assert not c.slow_start


def test_baseline_relearns_when_the_service_becomes_slower_for_good() -> None:
    knee = 32

    def service(base: float) -> tuple[object, object]:
        return (lambda n: base * max(1.0, n / knee)), (lambda n: min(n, knee) / base)

    c = controller(initial_limit=5)
    rtt, throughput = service(0.010)
    feed(c, 150, rtt=rtt, throughput=throughput)
    before = c.limit
    assert c.baseline == pytest.approx(0.010)
    rtt, throughput = service(0.020)  # every call now takes twice as long
    limits = feed(c, 300, rtt=rtt, throughput=throughput)
    assert min(limits) < before * 0.75  # it first read the slowdown as queueing
    assert c.baseline == pytest.approx(0.020)  # then re-learned
    assert 0.75 * knee <= limits[-1] <= 1.25 * knee + math.sqrt(knee)
    feed(c, 50, rtt=rtt, throughput=throughput)
    assert c.baseline == pytest.approx(0.020)


def test_elasticity_needs_spread_and_throughput() -> None:
    c = controller()
    assert c.elasticity() is None
    c._history.extend([(20, 100.0, 0.1), (20.5, 110.0, 0.1), (21, 90.0, 0.1)])
    assert c.elasticity() is None  # less than 10% spread in concurrency
    c._history.clear()
    c._history.extend([(10, 0.0, 0.1), (20, 0.0, 0.1), (30, 0.0, 0.1)])
    assert c.elasticity() is None  # no throughput at all
    c._history.clear()
    c._history.extend([(10, 100.0, 0.1), (20, 200.0, 0.1), (30, 300.0, 0.1)])
    assert c.elasticity() == pytest.approx(1.0)
    assert repr(c).startswith("GradientController(limit=20.00")


# --- the limit ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "parameter"),
    [
        ({"min_limit": 0}, ValueError, "min_limit"),
        ({"min_limit": 5, "max_limit": 4, "initial_limit": 5}, ValueError, "max_limit"),
        ({"initial_limit": 0}, ValueError, "initial_limit"),
        ({"initial_limit": 2000}, ValueError, "initial_limit"),
        ({"initial_limit": 2.5}, TypeError, "initial_limit"),
        ({"smoothing": 0}, ValueError, "smoothing"),
        ({"smoothing": 1.5}, ValueError, "smoothing"),
        ({"tolerance": 0.9}, ValueError, "tolerance"),
        ({"backoff": 1}, ValueError, "backoff"),
        ({"backoff": "x"}, TypeError, "backoff"),
        ({"window": 0}, ValueError, "window"),
        ({"min_samples": 0}, ValueError, "min_samples"),
        ({"max_waiting": -1}, ValueError, "max_waiting"),
        ({"order": "x"}, ValueError, "order"),
        ({"tolerance": 1.3, "overload_tolerance": 1.5, "order": "adaptive"}, ValueError, "overl"),
        ({"overload_tolerance": 0.9, "order": "adaptive"}, ValueError, "overload_tolerance"),
        ({"overload_tolerance": "1.1", "order": "adaptive"}, TypeError, "overload_tolerance"),
        ({"overload_tolerance": 1.0}, ValueError, "overload_tolerance needs order='adaptive'"),
    ],
)
def test_validation_names_the_parameter(
    kwargs: dict[str, object], error: type[Exception], parameter: str
) -> None:
    with pytest.raises(error, match=parameter):
        AdaptiveConcurrencyLimit(**kwargs)  # type: ignore[arg-type]


def test_overload_tolerance_holds_while_the_limit_is_overloaded() -> None:
    clock = FakeClock()
    limit = AdaptiveConcurrencyLimit(
        initial_limit=1, max_limit=1, window=0.25, min_samples=1, max_wait=0, tolerance=1.3,
        overload_tolerance=1.1, order="adaptive", clock=clock,
    )  # fmt: skip

    def window(*, turned_away: int) -> float:
        token = limit._enter()
        for _ in range(turned_away):
            with pytest.raises(ConcurrencyLimitError):
                limit._enter()  # no queue (max_wait=0): turned away
        clock.advance(0.3)
        limit._exit_ok(token, None)  # ends the window
        return limit._controller.tolerance

    assert window(turned_away=0) == 1.3
    assert window(turned_away=1) == 1.3  # one of two turned away: too few to tell
    assert window(turned_away=OVERLOAD_MIN) == 1.1  # overloaded: aim lower
    assert window(turned_away=0) == 1.1  # the last two windows: 5 of 7 turned away
    clock.advance(1.0)
    assert window(turned_away=0) == 1.3  # after a lull: back to the usual tolerance


def test_properties_and_repr() -> None:
    limit = AdaptiveConcurrencyLimit(initial_limit=8, min_limit=2, max_limit=50, name="s")
    assert (limit.limit, limit.min_limit, limit.max_limit) == (8, 2, 50)
    assert repr(limit) == "AdaptiveConcurrencyLimit(limit=8, min_limit=2, max_limit=50, name='s')"


def saturate(limit: AdaptiveConcurrencyLimit, clock: FakeClock, rtt: float) -> None:
    """One round: fill every permit, let *rtt* pass, release them all as successes."""
    tokens = []
    while True:
        try:
            tokens.append(limit._enter())
        except ConcurrencyLimitError:  # noqa: PERF203 - the loop ends here
            break
    clock.advance(rtt)
    for token in tokens:
        limit._exit_ok(token, None)


def test_limit_follows_latency_and_the_gauge_follows_the_limit() -> None:
    clock = FakeClock()
    with capture_metrics() as sink:
        limit = AdaptiveConcurrencyLimit(
            initial_limit=10, max_wait=0, window=0.1, min_samples=5, clock=clock, name="a"
        )
        for _ in range(80):
            saturate(limit, clock, 0.1)  # flat latency: up
        high = limit.limit
        assert high > 20
        assert sink.last(CONCURRENCY_LIMIT_LIMIT, {"resilient.name": "a"}) == high
        for _ in range(40):
            saturate(limit, clock, 0.1 * limit.limit / 10)  # latency grows with concurrency: down
        assert limit.limit < high
    stats = limit.statistics()
    assert (stats.active, stats.waiting, stats.limit) == (0, 0, limit.limit)


def test_timeouts_are_drops_other_errors_and_cancellation_are_not_samples() -> None:
    clock = FakeClock()
    limit = AdaptiveConcurrencyLimit(
        initial_limit=10, max_wait=0, window=1.0, min_samples=1, clock=clock
    )
    token = limit._enter()
    clock.advance(2)
    limit._exit_error(token, ValueError())  # not a sample: the window stays open
    token = limit._enter()
    limit._exit_error(token, asyncio.CancelledError())
    assert limit.limit == 10
    token = limit._enter()
    limit._exit_error(token, TimeoutError())  # a drop closes the window: back off
    assert limit.limit == 9
    assert limit.statistics().active == 0


def test_a_cut_retires_permits_as_they_come_back() -> None:
    clock = FakeClock()
    limit = AdaptiveConcurrencyLimit(
        initial_limit=10, max_wait=0, window=1.0, min_samples=1, clock=clock
    )
    tokens = [limit._enter() for _ in range(10)]
    clock.advance(1)
    limit._exit_error(tokens.pop(), TimeoutError())  # limit 10 -> 9 with 9 still held
    with pytest.raises(ConcurrencyLimitError):
        limit._enter()
    limit._controller.limit = 4.0
    clock.advance(1)
    limit._exit_error(tokens.pop(), TimeoutError())  # 4 * 0.9 -> limit 4, 8 held: 4 owed
    assert (limit.limit, limit._debt) == (4, 4)
    for token in tokens[:4]:
        limit._exit_error(token, RuntimeError())
    assert limit._debt == 0
    with pytest.raises(ConcurrencyLimitError):
        limit._enter()  # still 4 held
    for token in tokens[4:]:
        limit._exit_error(token, RuntimeError())
    stats = limit.statistics()
    assert (stats.active, stats.limit, stats.max_active) == (0, 4, 10)
    assert len(limit._permits) == 4


@pytest.mark.anyio
async def test_a_rise_admits_waiters_at_once() -> None:
    clock = FakeClock(autojump=False)
    limit = AdaptiveConcurrencyLimit(
        initial_limit=2, max_waiting=5, max_wait=None, window=1.0, min_samples=1, clock=clock
    )
    admitted: list[int] = []

    async def waiter(i: int) -> None:
        async with limit:
            admitted.append(i)
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        held = [limit._enter_nowait(), limit._enter_nowait()]
        for i in range(3):
            tg.start_soon(waiter, i)
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        assert limit.statistics().waiting == 3
        limit._controller.limit = 6.0
        clock.advance(1)
        limit._exit_ok(held.pop(), None)  # flat latency: the limit rises and waiters get in
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        assert sorted(admitted) == [0, 1, 2]
        assert limit.limit > 2
        tg.cancel_scope.cancel()
    limit._exit_ok(held.pop(), None)
    assert limit.statistics().active == 0


@pytest.mark.anyio
async def test_async_and_thread_callers_share_an_adaptive_limit() -> None:
    limit = AdaptiveConcurrencyLimit(initial_limit=1, max_waiting=4, max_wait=5)

    @limit
    async def task() -> int:
        await anyio.sleep(0.001)
        return 1

    @limit
    def blocking() -> int:
        return 2

    gate = threading.Event()

    def hold() -> None:
        with limit:
            gate.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, hold)
        await until(lambda: limit.statistics().active == 1)
        results: list[int] = []

        async def run_task() -> None:
            results.append(await task())

        async def run_blocking() -> None:
            results.append(await anyio.to_thread.run_sync(blocking))

        tg.start_soon(run_task)
        tg.start_soon(run_blocking)
        await until(lambda: limit.statistics().waiting == 2)
        gate.set()
    assert sorted(results) == [1, 2]
    assert limit.statistics().active == 0


def test_a_limit_that_starts_on_the_plateau_probes_down_to_the_knee() -> None:
    # Latency flat (it hides the queue), throughput flat from 10 up: from 40 the limit only ever
    # sees the plateau, so the knee must be below what it has seen.
    c = controller(initial_limit=40)
    limits = feed(c, 300, rtt=lambda _: 0.010, throughput=lambda n: min(n, 10) * 100)
    assert min(limits) < 20
    assert limits[-1] < 25


# --- slow start -----------------------------------------------------------------------------------


def test_slow_start_doubles_while_saturated_and_flat() -> None:
    c = controller(initial_limit=10, slow_start=True)
    limits = feed(c, 5, rtt=lambda _: 0.050, throughput=lambda n: n / 0.050)
    # The first window only sets the baseline (a smoothed step); then x2 per window.
    assert limits[0] == pytest.approx(10.2)
    for a, b in itertools.pairwise(limits):
        assert b == pytest.approx(2 * a)
    assert c.slow_start
    # Not saturated (fewer than 90% of the permits used): no doubling.
    assert c.update(rtt=0.050, throughput=1000, inflight=math.ceil(0.6 * c.limit), drops=0) < (
        1.1 * c.limit
    )
    assert c.slow_start


def test_slow_start_holds_while_overloaded() -> None:
    # A load far over the limit came in a step: its first window has the latency of the calls
    # admitted before it, not yet what the step does. A load a little over the limit doubles.
    c = controller(initial_limit=100, slow_start=True)
    c.update(rtt=0.050, throughput=900, inflight=47, drops=0)  # the baseline
    assert c.update(rtt=0.050, throughput=1900, inflight=100, drops=0, overloaded=True) == 100
    assert c.slow_start
    assert c.update(rtt=0.050, throughput=1900, inflight=100, drops=0) == pytest.approx(200)


def test_an_adaptive_order_in_slow_start_holds_while_overloaded() -> None:
    clock = FakeClock()
    limit = AdaptiveConcurrencyLimit(
        initial_limit=10,
        max_wait=0,
        window=0.3,
        min_samples=5,
        slow_start=True,
        order="adaptive",
        clock=clock,
    )

    def full_round(turned_away: int) -> None:
        tokens = [limit._enter() for _ in range(limit.limit)]
        for _ in range(turned_away):
            with pytest.raises(ConcurrencyLimitError):
                limit._enter()
        clock.advance(0.3)
        for token in tokens:
            limit._exit_ok(token, None)

    full_round(1)  # the first window sets the baseline
    full_round(10)  # half the callers turned away: overloaded, so no doubling
    assert limit.limit == 10
    assert limit._controller.slow_start
    for _ in range(5):  # one caller in eleven turned away: once the gauge agrees, double
        full_round(1)
        if limit.limit != 10:
            break
    assert limit.limit == 20


def test_slow_start_stops_when_latency_rises_and_never_resumes() -> None:
    knee, base = 32, 0.010
    c = controller(initial_limit=10, slow_start=True)
    limits = feed(
        c, 3, rtt=lambda n: base * max(1.0, n / knee), throughput=lambda n: min(n, knee) / base
    )
    # 10 -> 10.2 -> 20.4 -> 40.8; at 40.8 latency is 27% over the baseline: slow start ends with
    # one unsmoothed step to the gradient's target (the knee plus headroom).
    assert limits[:3] == pytest.approx([10.2, 20.4, 40.8])
    c.update(rtt=base * 40.8 / knee, throughput=knee / base, inflight=41, drops=0)
    assert not c.slow_start
    assert c.limit == pytest.approx(knee + 4.08, rel=0.01)
    limits = feed(
        c, 200, rtt=lambda n: base * max(1.0, n / knee), throughput=lambda n: min(n, knee) / base
    )
    assert all(b < 1.2 * a for a, b in itertools.pairwise(limits))  # additive from now on
    assert 32 <= limits[-1] <= 32 + math.sqrt(40) + 1


def test_slow_start_ends_on_drops_and_latency_that_climbs_blocks_growth() -> None:
    c = controller(initial_limit=10, slow_start=True)
    feed(c, 2, rtt=lambda _: 0.050, throughput=lambda n: n / 0.050)
    assert c.limit == pytest.approx(20.4)
    c.update(rtt=0.050, throughput=400, inflight=21, drops=1)
    assert not c.slow_start
    assert c.limit == pytest.approx(20.4 * 0.9)
    c = controller(initial_limit=10, slow_start=True)
    feed(c, 1, rtt=lambda _: 0.050, throughput=lambda n: n / 0.050)
    before = c.limit
    c.update(rtt=0.060, throughput=200, inflight=11, drops=0)  # 20% slower: a queue
    assert not c.slow_start
    assert c.limit < before


def test_slow_start_stays_within_bounds() -> None:
    c = controller(initial_limit=10, min_limit=5, max_limit=50, slow_start=True)
    limits = feed(c, 10, rtt=lambda _: 0.050, throughput=lambda n: n / 0.050)
    assert max(limits) == 50
    assert all(5 <= x <= 50 for x in limits)
    assert c.slow_start  # flat all along: still in slow start, at the ceiling


def test_slow_start_windows_end_early_once_they_have_enough_calls() -> None:
    clock = FakeClock()
    limit = AdaptiveConcurrencyLimit(
        initial_limit=10, max_wait=0, window=10.0, min_samples=10, slow_start=True, clock=clock
    )
    for _ in range(5):
        saturate(limit, clock, 0.1)
    assert limit.limit == 10  # the first window, which sets the baseline, lasts the full 10 s
    clock.advance(10)
    saturate(limit, clock, 0.1)  # it ends: baseline 0.1 s (a smoothed step, no doubling)
    assert limit.limit == 10
    saturate(limit, clock, 0.1)  # 10 samples but 0.1 s < 3 x their latency: still open
    assert limit.limit == 10
    clock.advance(0.2)
    saturate(limit, clock, 0.1)  # 0.4 s, 20 samples: a short window ends, and the limit doubles
    assert limit.limit == 20
    for _ in range(3):
        saturate(limit, clock, 0.3)  # 3x slower: slow start ends
    assert not limit._controller.slow_start
    assert limit._controller.baseline == pytest.approx(0.1)
    before = limit.limit
    for _ in range(5):
        saturate(limit, clock, 0.3)  # full windows again: nothing moves within 10 s
    assert limit.limit == before
    clock.advance(10)
    saturate(limit, clock, 0.3)
    assert limit.limit != before
