"""Concurrency limits: regressions (sinks, loop callbacks, context-manager holds, rejections).

Each test here failed before its fix, but for the trio case of the loop-callback test (sniffio
already saw trio from `run_sync_soon`; it covers the new trio check).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest

from resilient import AdaptiveConcurrencyLimit, ConcurrencyLimit, ConcurrencyLimitError
from resilient._errors import fast_rejection
from resilient.metrics import CONCURRENCY_LIMIT_ACTIVE, collect
from resilient.testing import FakeClock


if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from resilient.metrics import Measurement, Metric


class StatusSink:
    """A sink that reads the state of its sources from `record()`, as a status exporter might."""

    def __init__(self) -> None:
        self.seen: list[Measurement] = []

    def record(self, metric: Metric, value: float, attributes: Mapping[str, str]) -> None:
        self.seen.extend(collect(self))  # each source's statistics(): takes the limit's lock


def finishes(fn: Callable[[], object], timeout: float = 3.0) -> bool:
    """Run *fn* in a daemon thread; tell whether it returned within *timeout* (no deadlock)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # handed back to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)  # a deadlocked one must not block exit
    thread.start()
    thread.join(timeout)
    if errors:
        raise errors[0]
    return not thread.is_alive()


# --- the sink is called without the limit's lock ----------------------------------------------


def test_a_sink_may_read_statistics_when_a_thread_is_rejected() -> None:
    sink = StatusSink()
    limit = ConcurrencyLimit(1, max_waiting=0, max_wait=1, sink=sink)

    def rejected() -> None:
        with pytest.raises(ConcurrencyLimitError):
            limit.__enter__()

    with limit:
        assert finishes(rejected)
    assert [m.value for m in sink.seen if m.metric is CONCURRENCY_LIMIT_ACTIVE] == [1]
    assert limit.statistics().rejected == 1


def test_a_sink_may_read_statistics_when_the_queue_fills_before_an_async_caller_joins(
    anyio_backend: str,
) -> None:
    sink = StatusSink()
    limit = ConcurrencyLimit(1, max_waiting=0, max_wait=1, sink=sink)

    async def main() -> None:
        async with limit:
            with pytest.raises(ConcurrencyLimitError):
                # Past the pre-check, as when another thread fills the queue in between: the
                # rejection comes from registering the waiter, on the event loop's thread.
                await limit._take_async()

    assert finishes(lambda: anyio.run(main, backend=anyio_backend))
    assert [m.value for m in sink.seen if m.metric is CONCURRENCY_LIMIT_ACTIVE] == [1]


# --- a sync caller in a plain event-loop callback ----------------------------------------------


def rejected_at_once(limit: ConcurrencyLimit, took: list[float]) -> Callable[[], None]:
    def callback() -> None:
        start = time.monotonic()
        with pytest.raises(ConcurrencyLimitError):
            limit.__enter__()
        took.append(time.monotonic() - start)

    return callback


def test_a_sync_caller_in_an_asyncio_loop_callback_is_rejected_not_blocked() -> None:
    limit = ConcurrencyLimit(1, max_wait=2)
    took: list[float] = []
    callback = rejected_at_once(limit, took)

    async def main() -> None:  # a plain asyncio loop, as a server runs it (no anyio around)
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def on_data() -> None:  # a loop callback, as a protocol's data_received: not a task
            callback()
            done.set_result(None)

        async with limit:
            loop.call_soon(on_data)
            await done

    asyncio.run(main())
    assert len(took) == 1
    assert took[0] < 1  # before the fix: blocked the loop for max_wait, then timed out
    stats = limit.statistics()
    assert (stats.rejected, stats.timed_out) == (1, 0)


@pytest.mark.anyio
async def test_a_sync_caller_in_a_loop_callback_is_rejected_not_blocked(anyio_backend: str) -> None:
    limit = ConcurrencyLimit(1, max_wait=2)
    took: list[float] = []
    callback = rejected_at_once(limit, took)
    async with limit:
        if anyio_backend == "asyncio":
            # The loop's own callbacks run in whatever context they were given: none of anyio's.
            asyncio.get_running_loop().call_soon(callback, context=contextvars.Context())
        else:
            import trio  # noqa: PLC0415 - only on the trio backend

            trio.lowlevel.current_trio_token().run_sync_soon(callback)
        for _ in range(1000):
            if took:
                break
            await anyio.sleep(0.001)
    assert len(took) == 1
    assert took[0] < 1
    stats = limit.statistics()
    assert (stats.rejected, stats.timed_out) == (1, 0)


# --- context managers learn hold times ----------------------------------------------------------


def test_with_blocks_make_retry_after_known() -> None:
    clock = FakeClock()
    limit = ConcurrencyLimit(1, max_wait=0, clock=clock)
    with limit:
        clock.advance(2.0)
    with limit, pytest.raises(ConcurrencyLimitError) as info:
        limit.__enter__()
    assert info.value.retry_after == pytest.approx(2.0)  # one ahead, one permit, 2 s each


@pytest.mark.anyio
async def test_async_with_blocks_make_retry_after_known() -> None:
    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(1, max_wait=0, clock=clock)
    async with limit:
        clock.advance(3.0)
    with pytest.raises(ConcurrencyLimitError) as info:
        async with limit, limit:
            pass  # pragma: no cover - the inner block is rejected
    assert info.value.retry_after == pytest.approx(3.0)


@pytest.mark.anyio
async def test_interleaved_blocks_pair_exits_with_timed_entries_in_order() -> None:
    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(4, max_waiting=0, clock=clock)  # timed once <= 1 permit is free
    await limit.__aenter__()
    await limit.__aenter__()  # 2 free: not timed
    await limit.__aenter__()  # t=0: 1 free, timed
    clock.advance(1)
    await limit.__aenter__()  # t=1: timed
    clock.advance(1)
    await limit.__aexit__(None, None, None)  # t=2: a 1 s hold, paired with the t=0 entry: 2 s
    clock.advance(2)
    await limit.__aexit__(None, None, None)  # t=4: a 4 s hold, paired with the t=1 entry: 3 s
    assert limit._hold == pytest.approx(2.0 + (3.0 - 2.0) * 0.1)  # the samples sum to the holds
    await limit.__aexit__(None, None, None)
    await limit.__aexit__(None, None, None)  # the last exits find no timed entry
    assert not limit._starts
    with pytest.raises(RuntimeError, match="exited more often"):
        await limit.__aexit__(None, None, None)


def test_threads_in_with_blocks_leave_no_start_behind() -> None:
    limit = ConcurrencyLimit(2, max_waiting=8, max_wait=5)

    def work() -> None:
        for _ in range(200):
            with limit:
                pass

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    stats = limit.statistics()
    assert (stats.admitted, stats.active) == (1200, 0)
    assert not limit._starts


# --- rejections skip the error's Python __init__ -------------------------------------------------


def test_fast_rejection_builds_the_same_error() -> None:
    fast = fast_rejection(ConcurrencyLimitError, "db", 1.5)
    slow = ConcurrencyLimitError("db", 1.5)
    assert type(fast) is ConcurrencyLimitError
    assert (fast.args, fast.name, fast.retry_after) == (slow.args, slow.name, slow.retry_after)
    assert (str(fast), repr(fast)) == (str(slow), repr(slow))


@pytest.mark.anyio
async def test_rejections_do_not_run_the_error_init(monkeypatch: pytest.MonkeyPatch) -> None:
    def init(self: object, *args: object) -> None:  # pragma: no cover - must not run
        raise AssertionError("RejectedError.__init__ on a rejection path")

    clock = FakeClock(autojump=False)
    limit = ConcurrencyLimit(1, max_waiting=1, max_wait=1, clock=clock, name="db")
    adaptive = AdaptiveConcurrencyLimit(initial_limit=1, max_wait=0, name="ad")
    monkeypatch.setattr(ConcurrencyLimitError, "__init__", init)
    errors: list[ConcurrencyLimitError] = []

    async def expires() -> None:
        with pytest.raises(ConcurrencyLimitError) as info:
            await limit.__aenter__()
        errors.append(info.value)

    async with limit, adaptive:
        with pytest.raises(ConcurrencyLimitError) as info:
            await adaptive.__aenter__()  # no wait allowed
        errors.append(info.value)
        with pytest.raises(ConcurrencyLimitError) as info:
            adaptive.__enter__()  # a sync caller on the loop thread
        errors.append(info.value)
        async with anyio.create_task_group() as tg:
            tg.start_soon(expires)
            for _ in range(20):
                await anyio.lowlevel.checkpoint()
            with pytest.raises(ConcurrencyLimitError) as info:
                await limit.__aenter__()  # the queue is full
            errors.append(info.value)
            clock.advance(1)  # the waiter's max_wait is over
    assert [(e.name, e.args) for e in errors] == [
        ("ad", ("ad", None)),
        ("ad", ("ad", None)),
        ("db", ("db", None)),
        ("db", ("db", None)),
    ]
