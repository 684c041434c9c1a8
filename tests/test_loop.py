"""LoopMonitor: delay measured from outside the loop, stalls named by function and line."""

from __future__ import annotations

import logging
import selectors
import sys
import threading
import time

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from resilient import LoopMonitor
from resilient._stall import Stall, capture_stall
from resilient._utilization import IdleMeter, install_idle_meter
from resilient.metrics import EVENT_LOOP_DELAY, EVENT_LOOP_STALLS, InMemorySink


def blocking_handler(seconds: float) -> None:
    time.sleep(seconds)  # the line the stall report must name


BLOCKING_LINE = blocking_handler.__code__.co_firstlineno + 1


async def settle(monitor: LoopMonitor) -> None:
    """Give the watchdog time to post and record a few heartbeats."""
    await anyio.sleep(monitor.interval * 5)


@pytest.mark.anyio
@pytest.mark.parametrize("seconds", [0.05, 0.1, 0.2])
async def test_blocking_calls_are_measured_within_ten_percent_plus_an_interval(
    seconds: float,
) -> None:
    async with LoopMonitor(interval=0.01, stall_threshold=0.5) as monitor:
        await settle(monitor)
        blocking_handler(seconds)
        await settle(monitor)
        measured = monitor.statistics().max
    assert seconds * 0.9 - monitor.interval <= measured <= seconds * 1.1 + monitor.interval


@pytest.mark.anyio
async def test_a_stall_names_the_blocking_function_and_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = InMemorySink()
    with caplog.at_level(logging.WARNING, logger="resilient.loop"):
        async with LoopMonitor(interval=0.01, stall_threshold=0.05, sink=sink) as monitor:
            await settle(monitor)
            blocking_handler(0.2)
            await settle(monitor)
    [stall] = monitor.stalls()
    assert stall.kind == "blocked"
    assert stall.culprit is not None
    assert (stall.culprit.name, stall.culprit.lineno) == ("blocking_handler", BLOCKING_LINE)
    assert stall.culprit.filename == __file__
    assert stall.duration is not None
    assert 0.15 <= stall.duration <= 0.3
    assert monitor.statistics().stalls == 1
    assert sink.total(EVENT_LOOP_STALLS, {"kind": "blocked"}) == 1
    [record] = [r for r in caplog.records if r.name == "resilient.loop"]
    assert f"in blocking_handler ({__file__}:{BLOCKING_LINE})" in record.getMessage()
    assert record.stall is stall.ended(stall.duration) or record.stall.stack == stall.stack  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_blocked_loop_is_visible_while_it_is_blocked() -> None:
    seen: list[float] = []
    overloaded: list[bool] = []
    async with LoopMonitor(interval=0.01, stall_threshold=1.0, overload_delay=0.05) as monitor:
        await settle(monitor)
        assert not monitor.is_overloaded()

        def look_from_another_thread() -> None:
            time.sleep(0.15)
            seen.append(monitor.current_delay)
            overloaded.append(monitor.is_overloaded())

        watcher = threading.Thread(target=look_from_another_thread)
        watcher.start()
        blocking_handler(0.3)  # the loop is blocked while the watcher looks
        watcher.join()
        await settle(monitor)
    assert seen[0] >= 0.1
    assert overloaded == [True]


@pytest.mark.anyio
async def test_delays_reach_the_sink_and_statistics() -> None:
    sink = InMemorySink()
    async with LoopMonitor(interval=0.005, sink=sink, window=50) as monitor:
        await anyio.sleep(0.2)
        stats = monitor.statistics()
    delays = sink.values(EVENT_LOOP_DELAY)
    assert len(delays) >= 5
    assert all(d >= 0 for d in delays)
    assert 5 <= stats.samples <= 50
    assert stats.p50 <= stats.p90 <= stats.p99 <= stats.max
    assert stats.utilization is None
    assert stats.stalls == 0


@pytest.mark.anyio
async def test_utilization_tells_busy_from_idle() -> None:
    async with LoopMonitor(interval=0.01, utilization=True) as monitor:
        await anyio.sleep(0.3)
        idle = monitor.statistics().utilization
        deadline = time.perf_counter() + 1.1  # utilization covers the last second
        while time.perf_counter() < deadline:
            blocking_handler(0.005)
            await anyio.lowlevel.checkpoint()
        busy = monitor.statistics().utilization
    assert idle is not None
    assert busy is not None
    assert idle < 0.3
    assert busy > 0.6


@pytest.mark.anyio
async def test_start_is_idempotent_and_stop_can_repeat() -> None:
    monitor = LoopMonitor()
    assert not monitor.running
    monitor.start()
    thread = monitor._thread
    monitor.start()
    assert monitor._thread is thread
    assert monitor.running
    assert "running" in repr(monitor)
    monitor.stop()
    monitor.stop()
    assert not monitor.running
    assert "stopped" in repr(monitor)


def test_one_monitor_watches_one_loop() -> None:
    monitor = LoopMonitor()
    started, done = threading.Event(), threading.Event()

    async def watch_and_wait() -> None:
        monitor.start()
        started.set()
        await anyio.to_thread.run_sync(done.wait)

    async def start() -> None:
        monitor.start()

    other = threading.Thread(target=anyio.run, args=(watch_and_wait,))
    other.start()
    started.wait()
    try:
        with pytest.raises(RuntimeError, match="one monitor per loop"):
            anyio.run(start)  # the first loop is still running: refuse
    finally:
        done.set()
        other.join()
    anyio.run(start)  # the first loop has ended: take over
    assert monitor.running
    monitor.stop()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_monitor_stops_when_its_loop_closes(backend: str) -> None:
    monitor = LoopMonitor(interval=0.005)

    async def main() -> None:
        monitor.start()  # never stopped by hand
        await anyio.sleep(0.05)

    anyio.run(main, backend=backend)
    thread = monitor._thread
    assert thread is not None
    thread.join(timeout=2)
    assert not thread.is_alive()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_loop_that_ends_during_a_stall_stops_the_monitor(backend: str) -> None:
    monitor = LoopMonitor(interval=0.005, stall_threshold=0.02)

    async def main() -> None:
        monitor.start()
        await anyio.sleep(0.03)
        blocking_handler(0.1)  # the run ends right after: the stall never gets its answer

    anyio.run(main, backend=backend)
    thread = monitor._thread
    assert thread is not None
    thread.join(timeout=2)
    assert not thread.is_alive()


def test_a_thread_waiting_in_its_selector_is_starved_not_blocked() -> None:
    ready = threading.Event()
    done = threading.Event()
    idents: list[int] = []

    def wait_in_selector() -> None:
        idents.append(threading.get_ident())
        with selectors.DefaultSelector() as selector:
            ready.set()
            while not done.is_set():
                selector.select(timeout=0.01)

    thread = threading.Thread(target=wait_in_selector)
    thread.start()
    ready.wait()
    try:
        deadline = time.monotonic() + 2
        stall: Stall | None = None
        while time.monotonic() < deadline:
            stall = capture_stall(sys._current_frames()[idents[0]], 0.0)
            if stall.stack[-1].name == "select":
                break
        assert stall is not None
        assert stall.kind == "starved"
    finally:
        done.set()
        thread.join()


def test_stall_without_a_frame_and_library_only_stacks() -> None:
    empty = capture_stall(None, 1.0)
    assert empty.stack == ()
    assert empty.culprit is None
    assert empty.kind == "blocked"
    library = capture_stall(sys._getframe(), 0.0)
    only_library = Stall(0.0, None, "blocked", library.stack[:1])
    assert only_library.culprit is only_library.stack[-1]
    assert "still going" in only_library.format()
    assert "(1000 ms)" in only_library.ended(1.0).format()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"interval": 0}, ValueError, "interval must be a number >= 0.001"),
        ({"interval": "1"}, TypeError, "interval must be a number"),
        ({"interval": True}, TypeError, "interval must be a number"),
        (
            {"interval": 0.1, "stall_threshold": 0.05},
            ValueError,
            "stall_threshold must be a number >= 0.1",
        ),
        ({"window": 0}, ValueError, "window must be an int >= 1"),
        ({"window": 1.5}, TypeError, "window must be an int"),
        ({"smoothing": 0}, ValueError, "smoothing must be a number > 0"),
        ({"overload_delay": -1}, ValueError, "overload_delay must be a number >= 0"),
        ({"max_stalls": -1}, ValueError, "max_stalls must be an int >= 0"),
    ],
)
def test_bad_configuration_names_the_parameter(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        LoopMonitor(**kwargs)  # type: ignore[arg-type]


def test_statistics_before_any_heartbeat() -> None:
    stats = LoopMonitor().statistics()
    assert (stats.current, stats.p99, stats.max, stats.samples) == (0.0, 0.0, 0.0, 0)


@pytest.mark.anyio
async def test_stopping_during_a_stall_ends_the_watchdog() -> None:
    monitor = LoopMonitor(interval=0.005, stall_threshold=0.02)
    monitor.start()
    thread = monitor._thread
    await settle(monitor)
    stopper = threading.Timer(0.08, monitor.stop)
    stopper.start()
    blocking_handler(0.2)
    stopper.join()
    assert thread is not None
    assert not thread.is_alive()
    assert monitor.statistics().stalls == 1


def test_utilization_needs_a_selector_loop() -> None:
    class ProactorLike:
        def call_soon_threadsafe(self, callback: object) -> None:
            pass

    with pytest.raises(TypeError, match="needs a selector event loop"):
        install_idle_meter(ProactorLike(), IdleMeter())


def test_utilization_uninstalls_cleanly_on_both_backends() -> None:
    async def main() -> None:
        token = anyio.lowlevel.current_token().native_token
        uninstall = install_idle_meter(token, IdleMeter())
        uninstall()
        uninstall()  # a second undo is harmless

    for backend in ("asyncio", "trio"):
        anyio.run(main, backend=backend)


def test_utilization_is_unknown_until_time_has_passed() -> None:
    meter = IdleMeter()
    meter._history.append((float("inf"), 0.0))  # a reading from "the future": no elapsed time
    assert meter.utilization() is None


def test_a_loop_that_stops_is_not_reported_as_stalled() -> None:
    class StoppedLoop:
        def is_running(self) -> bool:
            return False

    monitor = LoopMonitor(interval=0.001, stall_threshold=0.001, max_stalls=1)
    monitor._token = StoppedLoop()
    monitor._schedule = lambda callback: None  # accepted, never run: the loop is gone
    monitor._loop_thread = threading.get_ident()
    monitor._stopped.acquire()  # as start() does: held while running
    monitor._watch()  # returns instead of waiting forever for an answer
    assert monitor.stalls() == ()  # nothing blocked the loop: it stopped running


@pytest.mark.anyio
async def test_an_idle_loop_shows_no_delay_between_looks() -> None:
    # The watchdog looks once per interval; a heartbeat answered in the meantime is no delay.
    async with LoopMonitor(interval=0.3, stall_threshold=1.0) as monitor:
        readings = []
        for _ in range(10):
            await anyio.sleep(0.02)
            readings.append(monitor.current_delay)
    assert max(readings) < 0.05
