"""ConcurrencyLimit: admission, waiting order, hand-off, rejection, expiry, validation, metrics."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
import threading
import time
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from resilient import ConcurrencyLimit, ConcurrencyLimitError, ConcurrencyLimitStatistics
from resilient.metrics import (
    CONCURRENCY_LIMIT_ACTIVE,
    CONCURRENCY_LIMIT_LIMIT,
    CONCURRENCY_LIMIT_QUEUED,
    CONCURRENCY_LIMIT_WAIT,
    InMemorySink,
)
from resilient.testing import FakeClock, capture_metrics


sys.path.insert(0, str(Path(__file__).parent))

from helpers.limits import queue_dead_waiter, settle, start_queued_thread


async def until(predicate: object) -> None:
    for _ in range(2000):
        if predicate():  # type: ignore[operator]
            return
        await anyio.sleep(0.001)
    raise AssertionError("condition never became true")


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "parameter"),
    [
        ({"max_concurrent": 0}, ValueError, "max_concurrent"),
        ({"max_concurrent": -3}, ValueError, "max_concurrent"),
        ({"max_concurrent": 1.5}, TypeError, "max_concurrent"),
        ({"max_concurrent": True}, TypeError, "max_concurrent"),
        ({"max_concurrent": 2, "max_waiting": -1}, ValueError, "max_waiting"),
        ({"max_concurrent": 2, "max_waiting": "3"}, TypeError, "max_waiting"),
        ({"max_concurrent": 2, "max_wait": -0.1}, ValueError, "max_wait"),
        ({"max_concurrent": 2, "max_wait": float("nan")}, ValueError, "max_wait"),
        ({"max_concurrent": 2, "max_wait": float("inf")}, ValueError, "max_wait"),
        ({"max_concurrent": 2, "max_wait": "1"}, TypeError, "max_wait"),
        ({"max_concurrent": 2, "order": "random"}, ValueError, "order"),
        ({"max_concurrent": 2, "clock": object()}, TypeError, "clock"),
        ({"max_concurrent": 2, "name": 3}, TypeError, "name"),
        ({"max_concurrent": 2, "sink": object()}, TypeError, "sink"),
        ({"max_concurrent": 2, "max_wait": None, "standing_wait": 0.1}, ValueError, "standing"),
        ({"max_concurrent": 2, "max_wait": 0.1, "standing_wait": 0.2}, ValueError, "standing"),
        ({"max_concurrent": 2, "standing_wait": -1}, ValueError, "standing_wait"),
    ],
)
def test_validation_names_the_parameter(
    kwargs: dict[str, object], error: type[Exception], parameter: str
) -> None:
    with pytest.raises(error, match=parameter):
        ConcurrencyLimit(**kwargs)  # type: ignore[arg-type]


def test_properties_and_repr() -> None:
    limit = ConcurrencyLimit(3, max_waiting=5, max_wait=0.5, order="lifo", name="db")
    assert (limit.max_concurrent, limit.limit, limit.max_waiting, limit.max_wait, limit.order) == (
        3,
        3,
        5,
        0.5,
        "lifo",
    )
    assert (
        repr(limit) == "ConcurrencyLimit(3, max_waiting=5, max_wait=0.5, order='lifo', name='db')"
    )
    assert ConcurrencyLimit(2, max_wait=None).max_wait is None
    assert ConcurrencyLimit(2, max_wait=0).max_waiting == 0  # never waiting == no queue


# --- sync callers -----------------------------------------------------------------------------


def test_sync_decorator_and_context_manager() -> None:
    limit = ConcurrencyLimit(2)

    @limit
    def double(x: int) -> int:
        assert limit.statistics().active == 1
        return 2 * x

    assert double(4) == 8
    with limit, limit:
        assert limit.statistics().active == 2
    with pytest.raises(KeyError), limit:
        raise KeyError
    stats = limit.statistics()
    assert stats == ConcurrencyLimitStatistics(
        limit=2, active=0, waiting=0, admitted=4, rejected=0, timed_out=0, cancelled=0, max_active=2
    )


def test_exit_without_enter_is_an_error() -> None:
    limit = ConcurrencyLimit(1)
    with pytest.raises(RuntimeError, match="exited more often"):
        limit.__exit__(None, None, None)


def test_full_without_queue_rejects_at_once() -> None:
    limit = ConcurrencyLimit(1, max_wait=0, name="x")
    with limit, pytest.raises(ConcurrencyLimitError) as info:
        limit.__enter__()
    assert info.value.name == "x"
    assert limit.statistics().rejected == 1


def test_thread_waits_and_gets_the_permit_handed_off() -> None:
    limit = ConcurrencyLimit(1, max_wait=5)
    order: list[str] = []
    holder_in = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with limit:
            holder_in.set()
            release.wait()
            order.append("holder out")

    def waiter() -> None:
        with limit:
            order.append("waiter in")

    t1 = threading.Thread(target=holder)
    t1.start()
    holder_in.wait()
    t2 = threading.Thread(target=waiter)
    t2.start()
    while limit.statistics().waiting == 0:
        time.sleep(0.001)
    release.set()
    t1.join()
    t2.join()
    assert order == ["holder out", "waiter in"]
    stats = limit.statistics()
    assert (stats.admitted, stats.active, stats.waiting) == (2, 0, 0)


def test_thread_wait_expires_on_the_fake_clock() -> None:
    clock = FakeClock()
    limit = ConcurrencyLimit(1, max_wait=10, clock=clock)
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            with limit:
                pass  # pragma: no cover - never admitted
        except ConcurrencyLimitError as exc:
            errors.append(exc)

    with limit:
        t = threading.Thread(target=waiter)
        t.start()
        while limit.statistics().waiting == 0:
            time.sleep(0.001)
        clock.advance(9)
        time.sleep(0.02)
        assert t.is_alive()
        clock.advance(1)
        t.join(5)
    assert len(errors) == 1
    assert limit.statistics().timed_out == 1


def test_thread_wait_expires_in_real_time() -> None:
    limit = ConcurrencyLimit(1, max_wait=0.02)
    with limit:

        def waiter() -> None:
            with pytest.raises(ConcurrencyLimitError):
                limit.__enter__()

        t = threading.Thread(target=waiter)
        t.start()
        t.join(5)
    assert limit.statistics().timed_out == 1


def test_thread_waits_without_time_bound() -> None:
    limit = ConcurrencyLimit(1, max_wait=None)
    done = threading.Event()

    def waiter() -> None:
        with limit:
            done.set()

    with limit:
        t = threading.Thread(target=waiter)
        t.start()
        while limit.statistics().waiting == 0:
            time.sleep(0.001)
    t.join(5)
    assert done.is_set()


def test_interrupted_thread_waiter_leaves_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    limit = ConcurrencyLimit(1, max_wait=None)

    def interrupted(self: threading.Event, timeout: float | None = None) -> bool:
        raise KeyboardInterrupt

    with limit:
        monkeypatch.setattr(threading.Event, "wait", interrupted)
        with pytest.raises(KeyboardInterrupt):
            limit.__enter__()
        monkeypatch.undo()
    stats = limit.statistics()
    assert (stats.cancelled, stats.waiting, stats.active) == (1, 0, 0)


# --- async callers ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_decorator_and_context_manager() -> None:
    limit = ConcurrencyLimit(2)

    @limit
    async def double(x: int) -> int:
        return 2 * x

    assert await double(21) == 42
    async with limit:
        assert limit.statistics().active == 1
    with pytest.raises(ValueError, match="boom"):
        async with limit:
            raise ValueError("boom")
    assert limit.statistics().active == 0
    with pytest.raises(RuntimeError, match="exited more often"):
        await limit.__aexit__(None, None, None)


@pytest.mark.anyio
@pytest.mark.parametrize(("order", "expected"), [("fifo", [0, 1, 2, 3]), ("lifo", [3, 2, 1, 0])])
async def test_waiters_are_served_in_order(order: str, expected: list[int]) -> None:
    limit = ConcurrencyLimit(1, max_waiting=10, max_wait=None, order=order)  # type: ignore[arg-type]
    served: list[int] = []

    async def waiter(i: int) -> None:
        async with limit:
            served.append(i)

    async with anyio.create_task_group() as tg, limit:
        for i in range(4):
            tg.start_soon(waiter, i)
            await settle()
        assert limit.statistics().waiting == 4
    assert served == expected


def test_a_clock_that_raises_in_the_queue_check_leaves_the_lock_free() -> None:
    class Breaking(FakeClock):
        broken = False

        def now(self) -> float:
            if self.broken:
                raise OSError("clock gone")
            return super().now()

    clock = Breaking()
    limit = ConcurrencyLimit(1, max_wait=1.0, order="adaptive", clock=clock)
    clock.broken = True
    with pytest.raises(OSError, match="clock gone"):
        limit._check_queue()
    assert not limit._lock.locked()


@pytest.mark.anyio
async def test_release_hands_off_instead_of_letting_newcomers_barge() -> None:
    limit = ConcurrencyLimit(1, max_wait=None)
    events: list[str] = []

    async def waiter() -> None:
        async with limit:
            events.append("waiter")

    async with anyio.create_task_group() as tg:
        await limit.__aenter__()
        tg.start_soon(waiter)
        await settle()
        await limit.__aexit__(None, None, None)
        # The permit now belongs to the waiter, though it has not run yet: a newcomer must queue.
        assert limit.statistics().active == 1
        with pytest.raises(ConcurrencyLimitError):
            ConcurrencyLimit.__enter__(limit)  # a sync caller on the loop thread: rejected, no wait
        async with limit:
            events.append("newcomer")
    assert events == ["waiter", "newcomer"]


@pytest.mark.anyio
async def test_queue_full_rejects_with_retry_after() -> None:
    clock = FakeClock()
    limit = ConcurrencyLimit(1, max_waiting=1, max_wait=None, clock=clock, name="q")

    @limit
    async def hold(seconds: float) -> None:
        clock.advance(seconds)

    await hold(2.0)  # busy (no free permit left): timed, so retry_after becomes known
    async with anyio.create_task_group() as tg:
        async with limit:
            tg.start_soon(limit.__aenter__)
            await settle()
            with pytest.raises(ConcurrencyLimitError) as info:
                await hold(1.0)
            assert info.value.retry_after == pytest.approx(2.0 * 2)  # two ahead, one permit
        await settle()
        await limit.__aexit__(None, None, None)
    stats = limit.statistics()
    assert (stats.rejected, stats.admitted, stats.active) == (1, 3, 0)


@pytest.mark.anyio
async def test_retry_after_unknown_then_from_waits() -> None:
    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(4, max_waiting=0, max_wait=1, clock=clock)
    async with limit, limit, limit, limit:
        with pytest.raises(ConcurrencyLimitError) as info:
            await limit.__aenter__()
        assert info.value.retry_after is None
    limit._hold = -1.0  # forget the holds just timed: as if no hold were known yet
    limit._wait = 0.25  # as if waiters had waited about 0.25 s
    async with limit, limit, limit, limit:
        with pytest.raises(ConcurrencyLimitError) as info:
            await limit.__aenter__()
        assert info.value.retry_after == 0.25


async def enter_or_time_out(limit: ConcurrencyLimit, outcome: list[str]) -> None:
    """Enter *limit* once: record `"admitted"`, or `"timeout"` if it refused the caller."""
    try:
        async with limit:
            outcome.append("admitted")
    except ConcurrencyLimitError:
        outcome.append("timeout")


@pytest.mark.anyio
async def test_async_wait_expires_on_the_fake_clock() -> None:
    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(1, max_wait=5, clock=clock)
    outcome: list[str] = []

    async with anyio.create_task_group() as tg, limit:
        tg.start_soon(enter_or_time_out, limit, outcome)
        await settle()
        clock.advance(4.9)
        await settle()
        assert outcome == []
        clock.advance(0.1)
        await settle()
        assert outcome == ["timeout"]
    assert limit.statistics().timed_out == 1


@pytest.mark.anyio
async def test_a_permit_never_goes_to_a_waiter_past_its_deadline() -> None:
    # On a busy event loop a waiter's own timer fires late. A permit released in between must
    # not admit it after more than max_wait: it times out, and the permit stays free.
    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(1, max_wait=1.0, clock=clock)
    outcome: list[str] = []

    async with anyio.create_task_group() as tg:
        await limit.__aenter__()
        tg.start_soon(enter_or_time_out, limit, outcome)
        await settle()
        assert limit.statistics().waiting == 1
        clock.advance(1.5)  # past its deadline; the waiter has not run since
        await limit.__aexit__(None, None, None)
        stats = limit.statistics()
        assert (stats.active, stats.waiting) == (0, 0)  # the permit stayed free
        await settle()
    assert outcome == ["timeout"]
    stats = limit.statistics()
    assert (stats.admitted, stats.timed_out, stats.cancelled, stats.active) == (1, 1, 0, 0)
    async with limit:  # and the next caller gets it at once
        assert limit.statistics().active == 1


@pytest.mark.anyio
async def test_a_waiter_cancelled_after_it_expired_is_counted_once() -> None:
    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(1, max_wait=1.0, clock=clock)

    async def waiter() -> None:
        # Cancelled before it runs again, or (if the backend hands it its wake-up first) timed
        # out: either way it is counted once, and leaves the queue once.
        with contextlib.suppress(ConcurrencyLimitError):
            async with limit:
                pass  # pragma: no cover - never admitted

    async with anyio.create_task_group() as tg:
        await limit.__aenter__()
        tg.start_soon(waiter)
        await settle()
        clock.advance(1.5)
        await limit.__aexit__(None, None, None)  # the waiter is expired, not yet woken
        tg.cancel_scope.cancel()
    stats = limit.statistics()
    assert (stats.waiting, stats.active, stats.timed_out + stats.cancelled) == (0, 0, 1)
    assert limit._queued == 0


@pytest.mark.anyio
async def test_a_standing_queue_shortens_the_wait_of_newcomers() -> None:
    # One permit, held throughout; a caller every 0.3 s, each allowed to wait 1 s.
    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(1, max_waiting=10, max_wait=1.0, standing_wait=0.1, clock=clock)
    ended: dict[str, float] = {}

    async def waiter(tag: str) -> None:
        with pytest.raises(ConcurrencyLimitError):
            await limit.__aenter__()
        ended[tag] = clock.now()

    async def advance_to(at: float) -> None:  # in 0.05 s steps, so that expiries are seen on time
        while clock.now() < at - 1e-9:
            clock.advance(min(0.05, at - clock.now()))
            await settle()

    async def arrive(tag: str, at: float) -> None:
        await advance_to(at)
        tg.start_soon(waiter, tag)
        await settle()

    async with anyio.create_task_group() as tg, limit:
        await arrive("a", 0.0)  # the queue was empty: the full second, as for a burst
        await arrive("b", 0.3)
        await arrive("c", 0.9)
        # At 1.2 the queue (b, c) has not been empty since 0.0, longer than max_wait: it stands,
        # and newcomers wait 0.1 s, not 1 s.
        await arrive("d", 1.2)
        await arrive("e", 1.25)
        # b, d, e and c have gone by 1.9: at 2.0 the queue is empty, so f waits the full second,
        # and so does g, since the queue (f) is only 0.25 s old.
        await arrive("f", 2.0)
        await arrive("g", 2.25)
        await arrive("h", 3.5)  # empty again (f left at 3.0, g at 3.25): the full wait
        await advance_to(5.0)
    expected = {"a": 1.0, "b": 1.3, "c": 1.9, "d": 1.3, "e": 1.35, "f": 3.0, "g": 3.25, "h": 4.5}
    assert ended == pytest.approx(expected, abs=0.06)  # expiries are seen in 0.05 s steps


@pytest.mark.anyio
async def test_a_standing_queue_in_real_time() -> None:
    limit = ConcurrencyLimit(1, max_waiting=10, max_wait=0.2, standing_wait=0.01)
    assert limit.standing_wait == 0.01
    waited: dict[str, float] = {}

    async def waiter(tag: str) -> None:
        start = time.perf_counter()
        with pytest.raises(ConcurrencyLimitError):
            await limit.__aenter__()
        waited[tag] = time.perf_counter() - start

    async with anyio.create_task_group() as tg, limit:
        tg.start_soon(waiter, "a")  # t=0, queue empty
        await anyio.sleep(0.1)
        tg.start_soon(waiter, "b")  # queued behind a
        await anyio.sleep(0.15)
        tg.start_soon(waiter, "c")  # t=0.25: b queued, no empty queue since 0: it stands
        await anyio.sleep(0.1)  # every waiter gone before the permit is released
    assert waited["a"] >= 0.19
    assert waited["b"] >= 0.19
    assert waited["c"] < 0.1


def test_a_standing_queue_for_threads() -> None:
    limit = ConcurrencyLimit(1, max_waiting=10, max_wait=0.2, standing_wait=0.01)
    waited: dict[str, float] = {}

    def waiter(tag: str) -> None:
        start = time.perf_counter()
        with pytest.raises(ConcurrencyLimitError), limit:
            pass  # pragma: no cover - never admitted
        waited[tag] = time.perf_counter() - start

    threads = []
    with limit:
        for tag, pause in (("a", 0.1), ("b", 0.15), ("c", 0)):
            threads.append(threading.Thread(target=waiter, args=(tag,)))
            threads[-1].start()
            time.sleep(pause)
        for thread in threads:
            thread.join()
    assert waited["a"] >= 0.19
    assert waited["c"] < 0.1


@pytest.mark.anyio
async def test_async_waiter_admitted_before_fake_expiry() -> None:
    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(1, max_wait=5, clock=clock)
    async with anyio.create_task_group() as tg:
        await limit.__aenter__()
        tg.start_soon(limit.__aenter__)
        await settle()
        await limit.__aexit__(None, None, None)
    assert limit.statistics().admitted == 2
    await limit.__aexit__(None, None, None)


@pytest.mark.anyio
async def test_async_wait_expires_in_real_time() -> None:
    limit = ConcurrencyLimit(1, max_wait=0.01)
    async with limit:
        with pytest.raises(ConcurrencyLimitError):
            await limit.__aenter__()
    assert limit.statistics().timed_out == 1


@pytest.mark.anyio
async def test_cancelled_waiter_leaves_the_queue() -> None:
    limit = ConcurrencyLimit(1, max_wait=None)
    async with anyio.create_task_group() as tg, limit:
        tg.start_soon(limit.__aenter__)
        await settle()
        assert limit.statistics().waiting == 1
        tg.cancel_scope.cancel()
        await settle()
    stats = limit.statistics()
    assert (stats.cancelled, stats.waiting, stats.active) == (1, 0, 0)


@pytest.mark.anyio
async def test_waiter_cancelled_just_after_the_grant_passes_the_permit_on() -> None:
    limit = ConcurrencyLimit(1, max_waiting=5, max_wait=None)
    admitted: list[str] = []

    async def waiter(name: str) -> None:
        async with limit:
            admitted.append(name)

    async with anyio.create_task_group() as tg:
        await limit.__aenter__()
        async with anyio.create_task_group() as doomed:
            doomed.start_soon(waiter, "doomed")
            await settle()
            tg.start_soon(waiter, "second")
            await settle()
            # In one step: "doomed" is cancelled, then the release grants it the permit before
            # it could run and see the cancellation. The permit must go on to "second".
            doomed.cancel_scope.cancel()
            await limit.__aexit__(None, None, None)
            assert limit.statistics().waiting == 1
    stats = limit.statistics()
    assert admitted == ["second"]
    assert (stats.cancelled, stats.admitted, stats.active, stats.waiting) == (1, 2, 0, 0)


@pytest.mark.anyio
async def test_thread_release_wakes_an_async_waiter() -> None:
    limit = ConcurrencyLimit(1, max_wait=None)
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with limit:
            held.set()
            release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, holder)
        await anyio.to_thread.run_sync(held.wait)

        async def waiter() -> None:
            async with limit:
                pass

        tg.start_soon(waiter)
        await until(lambda: limit.statistics().waiting == 1)
        release.set()
    assert limit.statistics().admitted == 2


@pytest.mark.anyio
async def test_sync_function_on_the_loop_thread_is_rejected_not_blocked() -> None:
    limit = ConcurrencyLimit(1, max_wait=10)

    @limit
    def sync() -> None:  # pragma: no cover - never admitted
        pass

    async with limit:
        start = time.monotonic()
        with pytest.raises(ConcurrencyLimitError):
            sync()
        assert time.monotonic() - start < 1
    assert limit.statistics().rejected == 1


# --- metrics ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_metrics_observed_and_pushed_only_when_waiting(anyio_backend: str) -> None:
    clock = FakeClock(autojump=False)
    name = f"api-{anyio_backend}"  # limits of other tests may still be alive, and observed
    with capture_metrics() as sink:
        limit = ConcurrencyLimit(1, max_waiting=1, max_wait=3, clock=clock, name=name)
        async with limit:
            pass
        assert sink.records == []  # the fast path never calls the sink
        attrs = {"resilient.name": name}
        async with anyio.create_task_group() as tg:
            async with limit:
                assert sink.last(CONCURRENCY_LIMIT_ACTIVE, attrs) == 1
                assert sink.last(CONCURRENCY_LIMIT_LIMIT, attrs) == 1
                tg.start_soon(limit.__aenter__)
                await settle()
                assert sink.last(CONCURRENCY_LIMIT_QUEUED, attrs) == 1
                with pytest.raises(ConcurrencyLimitError):
                    await limit.__aenter__()  # queue full
                clock.advance(0.5)
            await settle()
            await limit.__aexit__(None, None, None)
        waits = [
            (m.attributes["result"], m.value)
            for m in sink.measurements(CONCURRENCY_LIMIT_WAIT, attrs)
        ]
        assert waits == [("rejected", 0.0), ("admitted", 0.5)]
        assert sink.last(CONCURRENCY_LIMIT_QUEUED, attrs) == 0


def test_metrics_to_an_own_sink_without_a_name() -> None:
    sink = InMemorySink()
    limit = ConcurrencyLimit(1, max_wait=0, sink=sink)
    with limit, pytest.raises(ConcurrencyLimitError):
        limit.__enter__()
    assert [m.attributes for m in sink.records] == [{"result": "rejected"}]
    assert sink.last(CONCURRENCY_LIMIT_LIMIT) == 1


# --- rare paths ---------------------------------------------------------------------------------


def test_a_permit_freed_before_queueing_is_taken_at_once() -> None:
    limit = ConcurrencyLimit(1)
    assert isinstance(limit._take_slow(), float)  # the fast path missed it; the slow path did not
    assert limit.statistics().admitted == 1
    limit.__exit__(None, None, None)


@pytest.mark.anyio
async def test_a_permit_freed_before_an_async_caller_queues_is_taken_at_once() -> None:
    limit = ConcurrencyLimit(1)
    assert isinstance(await limit._take_async(), float)
    assert limit.statistics().admitted == 1
    await limit.__aexit__(None, None, None)


class _RacyPermits(collections.deque[None]):
    """Permits whose first pop() finds none: a release lands just after the caller looked."""

    raced = False

    def pop(self) -> None:
        if not self.raced:
            self.raced = True
            raise IndexError
        return super().pop()


def test_a_permit_released_while_a_caller_registers_is_not_lost() -> None:
    limit = ConcurrencyLimit(1, max_wait=5)
    limit._permits = _RacyPermits([None])
    start = time.monotonic()
    assert isinstance(limit._take_slow(), float)  # granted during its own registration
    assert time.monotonic() - start < 1
    stats = limit.statistics()
    assert (stats.admitted, stats.active, stats.waiting) == (1, 1, 0)
    limit.__exit__(None, None, None)


def test_waiters_of_a_dead_loop_are_skipped_and_the_permit_goes_on() -> None:
    limit = ConcurrencyLimit(1, max_waiting=5, max_wait=5)
    limit.__enter__()
    dead = queue_dead_waiter(limit)
    assert "state=0" in repr(dead)
    got: list[str] = []

    def live() -> None:
        with limit:
            got.append("live")

    t = start_queued_thread(limit, live, waiting=2)
    limit.__exit__(None, None, None)
    t.join(5)
    stats = limit.statistics()
    assert got == ["live"]
    assert (stats.cancelled, stats.active, stats.waiting) == (1, 0, 0)


def test_a_waiter_whose_loop_closed_on_this_thread_does_not_keep_the_permit() -> None:
    # The loop is closed without cancelling its tasks (no asyncio.run cleanup), and the permit
    # is released later on the same thread, where the waiter's future is set directly.
    limit = ConcurrencyLimit(1, max_wait=None)

    async def wait() -> None:
        async with limit:
            pass  # pragma: no cover - its loop is closed before it gets the permit

    first = asyncio.new_event_loop()
    first.run_until_complete(limit.__aenter__())
    task = first.create_task(wait())
    first.run_until_complete(asyncio.sleep(0.01))
    assert limit.statistics().waiting == 1
    first.close()
    second = asyncio.new_event_loop()
    try:
        second.run_until_complete(limit.__aexit__(None, None, None))  # no RuntimeError
        second.run_until_complete(asyncio.wait_for(limit.__aenter__(), 1))  # the permit is free
        second.run_until_complete(limit.__aexit__(None, None, None))
    finally:
        second.close()
    stats = limit.statistics()
    assert (stats.active, stats.waiting, stats.cancelled) == (0, 0, 1)
    del task


def test_a_permit_nobody_alive_can_take_goes_back_to_the_pool() -> None:
    limit = ConcurrencyLimit(1, max_waiting=5)
    limit.__enter__()
    queue_dead_waiter(limit)
    limit.__exit__(None, None, None)
    stats = limit.statistics()
    assert (stats.cancelled, stats.active, stats.waiting) == (1, 0, 0)
    with limit:
        pass
