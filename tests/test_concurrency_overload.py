"""The adaptive order's overload mode: when it starts and ends (`resilient._overload`), and what
the limit does while it lasts (newest first, a queue cut to a tenth, the oldest waiters let go)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient import ConcurrencyLimit, ConcurrencyLimitError
from resilient._limit_parts import GONE
from resilient._overload import (
    OVERLOAD_MIN,
    OVERLOAD_SHARE,
    OVERLOAD_SPAN,
    OVERLOAD_WINDOW,
    OverloadGauge,
)
from resilient.testing import FakeClock


sys.path.insert(0, str(Path(__file__).parent))

from helpers.limits import queue_dead_waiter, settle


# --- the gauge alone ----------------------------------------------------------------------------


# Quick judgements (`check`) between window ends, at a time past the span since the base.
SOON = OVERLOAD_SPAN


def test_a_fifth_turned_away_is_overload_and_less_is_not() -> None:
    gauge = OverloadGauge(0.0)
    assert not gauge.check(SOON, admitted=81, turned_away=19, queued=0)  # 19%
    assert gauge.check(SOON, admitted=80, turned_away=20, queued=0)  # 20%: overload begins
    assert gauge.overloaded
    assert not gauge.check(SOON, admitted=80, turned_away=30, queued=0)  # already on: no new start


def test_a_growing_queue_counts_as_turned_away_and_a_draining_one_against() -> None:
    gauge = OverloadGauge(0.0)
    assert not gauge.check(SOON, admitted=40, turned_away=5, queued=4)  # 9 of 49
    assert gauge.check(SOON, admitted=40, turned_away=5, queued=5)  # 10 of 50
    calm = OverloadGauge(0.0)
    calm.end_window(0.25, admitted=0, turned_away=0, queued=50)  # a queue built up before
    calm.end_window(0.5, admitted=100, turned_away=30, queued=50)
    # The queue held steady: 30 turned away of 130 offered since 0.25 s.
    assert calm.overloaded
    calm.end_window(0.75, admitted=200, turned_away=40, queued=0)
    # Since 0.25 s: 40 turned away, but the queue shrank by 50 (served): no excess at all.
    assert not calm.overloaded


def test_a_quiet_limit_is_never_overloaded_by_a_few_callers() -> None:
    gauge = OverloadGauge(0.0)
    assert not gauge.check(SOON, admitted=0, turned_away=OVERLOAD_MIN - 1, queued=0)
    assert gauge.check(SOON, admitted=0, turned_away=OVERLOAD_MIN, queued=0)


def test_the_mode_ends_once_two_windows_fall_below_the_share() -> None:
    gauge = OverloadGauge(0.0)
    assert gauge.check(SOON, admitted=50, turned_away=50, queued=0)
    assert not gauge.end_window(0.25, admitted=50, turned_away=50, queued=0)  # still on
    assert gauge.overloaded
    # The next window turns 5 of 155 away, but the last two windows together: 55 of 255.
    gauge.end_window(0.5, admitted=200, turned_away=55, queued=0)
    assert gauge.overloaded
    gauge.end_window(0.75, admitted=600, turned_away=60, queued=0)  # 10 of 560: over
    assert not gauge.overloaded


def test_a_lull_of_two_windows_forgets_what_came_before() -> None:
    gauge = OverloadGauge(0.0)
    gauge.end_window(0.25, admitted=0, turned_away=0, queued=300)  # a backlog, then a lull
    assert gauge.overloaded
    # 2 windows later: not overloaded, and the backlog's totals are not the base any more.
    assert not gauge.end_window(0.25 + 2 * OVERLOAD_WINDOW, admitted=300, turned_away=0, queued=0)
    assert not gauge.overloaded
    later = 0.25 + 2 * OVERLOAD_WINDOW + OVERLOAD_SPAN
    assert not gauge.check(later, admitted=300, turned_away=4, queued=0)  # 4 new: under the minimum
    assert gauge.check(later, admitted=300, turned_away=5, queued=0)  # 5 of 5 since the lull


def test_a_burst_within_the_span_is_left_to_the_queue() -> None:
    gauge = OverloadGauge(0.0)  # 10 admitted and 30 queued, all in a few milliseconds
    assert not gauge.check(OVERLOAD_SPAN / 2, admitted=10, turned_away=0, queued=30)
    # the same share, lasting: overload
    assert gauge.check(OVERLOAD_SPAN, admitted=10, turned_away=0, queued=30)


windows = st.lists(
    st.tuples(
        st.integers(0, 500),  # admitted in the window
        st.integers(0, 200),  # turned away
        st.integers(-100, 100),  # change of the queue (never below empty)
        st.floats(OVERLOAD_WINDOW, 1.5 * OVERLOAD_WINDOW),  # the window's length
    ),
    min_size=1,
    max_size=30,
)


@given(windows)
def test_each_verdict_is_the_share_over_the_last_two_windows(
    sequence: list[tuple[int, int, int, float]],
) -> None:
    gauge = OverloadGauge(0.0)
    now, admitted, turned, queued = 0.0, 0, 0, 0
    totals = [(0, 0, 0)]  # at each window's start
    previous = False
    for add_admitted, add_turned, queue_change, length in sequence:
        now += length
        admitted, turned = admitted + add_admitted, turned + add_turned
        queued = max(0, queued + queue_change)
        started = gauge.end_window(now, admitted, turned, queued)
        base = totals[-2] if len(totals) >= 2 else totals[0]
        excess = turned - base[1] + queued - base[2]
        offered = excess + admitted - base[0]
        expected = excess >= OVERLOAD_MIN and excess >= OVERLOAD_SHARE * offered
        assert gauge.overloaded == expected
        assert started == (expected and not previous)  # only a change starts it
        previous = expected
        totals.append((admitted, turned, queued))


# --- the limit ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_overload_turns_the_order_to_newest_first_and_cuts_the_queue() -> None:
    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(20, max_wait=None, order="adaptive", clock=clock)
    served: list[str] = []
    refused: list[str] = []

    async def caller(name: str) -> None:
        try:
            async with limit:
                served.append(name)
        except ConcurrencyLimitError:
            refused.append(name)

    async def take_all() -> contextlib.AsyncExitStack:
        """Take every free permit but one, then that one: closing `last` frees one permit, and
        the waiters then pass it on, one at a time, in the order the limit chooses."""
        while limit.statistics().active < limit.limit - 1:
            await held.enter_async_context(limit)
        last = contextlib.AsyncExitStack()
        await last.enter_async_context(limit)
        return last

    async with contextlib.AsyncExitStack() as held, anyio.create_task_group() as tg:
        last = await take_all()  # 20 admitted, none turned away
        for name in "abcd":  # 4 of 24 offered queue (17%): a burst, not overload
            tg.start_soon(caller, name)
            await settle()
        assert limit.statistics().waiting == 4
        await last.aclose()
        await settle()
        assert served == ["a", "b", "c", "d"]  # oldest first

        served.clear()
        clock.advance(OVERLOAD_SPAN)  # not a burst any more: it lasts
        last = await take_all()  # 25 admitted since the start
        # 7 queue now: 7 of 32 offered (22%), and overload begins with the last of them.
        for name in "efghijk":
            tg.start_soon(caller, name)
            await settle()
        # The queue is cut to a tenth of the limit: its oldest waiters are let go at once.
        assert sorted(refused) == list("efghi")  # woken at once: in any order
        assert limit.statistics().timed_out == 5
        tg.start_soon(caller, "p")  # the short queue is full: turned away at once
        await settle()
        assert refused[-1] == "p"
        assert limit.statistics().rejected == 1
        await last.aclose()
        await settle()
        assert served == ["k", "j"]  # newest first

        # Two quiet windows later the mode is over: the queue is as long as the limit again.
        clock.advance(2 * OVERLOAD_WINDOW)
        served.clear()
        last = await take_all()
        for name in "qrs":
            tg.start_soon(caller, name)
            await settle()
        assert limit.statistics().waiting == 3
        await last.aclose()
        await settle()
        assert served == ["q", "r", "s"]


def test_the_queue_is_cut_to_a_tenth_of_the_limit_while_overloaded() -> None:
    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(25, max_wait=10, order="adaptive", clock=clock)
    clock.advance(OVERLOAD_SPAN)
    with limit._lock:
        assert limit._capacity_locked() == 25  # as long as the limit
        for _ in range(OVERLOAD_MIN):
            limit._turn_away_locked()  # 5 turned away of 5 offered
        assert limit._capacity_locked() == 2  # 25 // 10
        assert limit.max_waiting is None  # the option as given
    clock.advance(2 * OVERLOAD_WINDOW)
    with limit._lock:
        assert limit._capacity_locked() == 25
    capped = ConcurrencyLimit(25, max_waiting=1, max_wait=10, order="adaptive", clock=clock)
    clock.advance(OVERLOAD_SPAN)
    with capped._lock:
        capped._capacity_locked()
        for _ in range(OVERLOAD_MIN):
            capped._turn_away_locked()
        assert capped._capacity_locked() == 1  # never more than max_waiting
    tiny = ConcurrencyLimit(5, max_wait=10, order="adaptive", clock=clock)
    clock.advance(OVERLOAD_SPAN)
    with tiny._lock:
        tiny._capacity_locked()
        for _ in range(OVERLOAD_MIN):
            tiny._turn_away_locked()
        assert tiny._capacity_locked() == 1  # at least one


def test_other_orders_are_never_overloaded() -> None:
    limit = ConcurrencyLimit(5, max_wait=10, order="fifo")
    with limit._lock:
        for _ in range(50):
            limit._turn_away_locked()
        assert limit._capacity_locked() == 5
        assert not limit._overloaded_locked(0.0)


def test_overload_found_at_a_window_end_cuts_the_queue_too() -> None:
    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(20, max_wait=10, order="adaptive", clock=clock)
    for _ in range(20):
        limit.__enter__()  # 20 admitted at once
    left = queue_dead_waiter(limit)
    with limit._lock:  # its caller went away; the deque keeps it until someone passes by
        left.state = GONE
        limit._queued -= 1
    for _ in range(4):
        queue_dead_waiter(limit)  # queued without a check: only the window's end judges
    clock.advance(OVERLOAD_WINDOW)
    with limit._lock:
        assert not limit._overloaded_locked(clock.now())  # 4 of 24 offered
    queue_dead_waiter(limit)
    queue_dead_waiter(limit)
    clock.advance(OVERLOAD_WINDOW)
    with limit._lock:
        assert limit._overloaded_locked(clock.now())  # 6 of 26 since the start: overload
    stats = limit.statistics()
    # Cut to 2 waiters: the 4 oldest let go (their loops are gone: counted as cancelled).
    assert (stats.waiting, stats.cancelled) == (2, 4)


@pytest.mark.anyio
async def test_callers_that_timed_out_stay_counted_as_turned_away() -> None:
    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(20, max_wait=0.1, order="adaptive", clock=clock)
    refused: list[str] = []

    async def caller(name: str) -> None:
        try:
            async with limit:
                pass
        except ConcurrencyLimitError:
            refused.append(name)

    async with contextlib.AsyncExitStack() as held, anyio.create_task_group() as tg:
        for _ in range(20):
            await held.enter_async_context(limit)
        for name in "abcd":  # 4 of 24: no overload
            tg.start_soon(caller, name)
            await settle()
        clock.advance(0.11)  # all four time out
        await settle()
        assert sorted(refused) == list("abcd")
        with limit._lock:
            assert limit._capacity_locked() == 20
        tg.start_soon(caller, "e")  # 4 timed out + 1 queued = 5 of 25: overload
        await settle()
        with limit._lock:
            assert limit._capacity_locked() == 2
        clock.advance(0.11)
        await settle()


@pytest.mark.anyio
async def test_a_release_after_a_lull_serves_the_oldest_first_again() -> None:
    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(20, max_wait=None, order="adaptive", clock=clock)
    served: list[str] = []

    async def caller(name: str) -> None:
        with contextlib.suppress(ConcurrencyLimitError):
            async with limit:
                served.append(name)

    async with contextlib.AsyncExitStack() as held, anyio.create_task_group() as tg:
        for _ in range(19):
            await held.enter_async_context(limit)
        last = contextlib.AsyncExitStack()
        await last.enter_async_context(limit)
        clock.advance(OVERLOAD_SPAN)
        for name in "abcdef":  # e makes 5 of 25 queued: overload, the queue cut to d and e
            tg.start_soon(caller, name)
            await settle()
        assert limit.statistics().waiting == 2
        assert limit.statistics().rejected == 1  # f: the short queue was full
        clock.advance(2 * OVERLOAD_WINDOW)  # a lull: the release itself finds the mode over
        await last.aclose()
        await settle()
        assert served == ["d", "e"]  # oldest first


def test_waiters_let_go_count_at_once_not_when_their_tasks_run() -> None:
    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(20, max_wait=10, order="adaptive", clock=clock)
    for _ in range(20):
        limit.__enter__()
    later: list[object] = []  # a busy loop: wake-ups scheduled, not yet run
    for _ in range(7):
        waiter = queue_dead_waiter(limit)
        waiter.schedule = later.append
    clock.advance(OVERLOAD_SPAN)
    with limit._lock:
        limit._check_overload_locked()  # 7 of 27 queued: overload; 5 let go, their tasks idle
        assert limit._queued == 2
    clock.advance(OVERLOAD_WINDOW)
    with limit._lock:  # a window ends before any of them has settled
        assert limit._overloaded_locked(clock.now())  # still 7 in excess: 5 let go, 2 queued
    assert len(later) == 5


@pytest.mark.anyio
async def test_a_burst_into_an_idle_limit_waits_in_the_queue() -> None:
    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(10, max_wait=None, order="adaptive", clock=clock)
    clock.advance(10.0)  # idle since it was made
    served: list[int] = []

    async def caller(i: int) -> None:
        async with limit:
            served.append(i)

    async with contextlib.AsyncExitStack() as held, anyio.create_task_group() as tg:
        for _ in range(10):  # 15 callers at the same instant: 10 admitted, 5 queued (a third)
            await held.enter_async_context(limit)
        for i in range(5):
            tg.start_soon(caller, i)
            await settle()
        stats = limit.statistics()
        assert (stats.waiting, stats.timed_out, stats.rejected) == (5, 0, 0)  # none let go
        await held.aclose()
    assert sorted(served) == [0, 1, 2, 3, 4]  # all served
