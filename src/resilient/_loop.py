"""`LoopMonitor`: event-loop delay measured from outside the loop, and the code that blocks it.

A watchdog thread posts a heartbeat into the loop through its thread-safe entry point (asyncio's
`call_soon_threadsafe`, trio's `TrioToken.run_sync_soon`) and measures how late it runs. Sampling
from inside the loop (a sleep that measures its own drift) cannot see a loop that is blocked right
now; a heartbeat that has not been answered yet can, so it counts as the current delay. When a
heartbeat is later than `stall_threshold`, the watchdog samples the loop thread's stack and reports
a `Stall` once: a log record with the stack, a metric, and an entry in a bounded list.

It uses real time (`time.perf_counter`) and takes no `clock=`: it measures the real loop.
"""

from __future__ import annotations

import collections
import logging
import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from resilient._eventloop import native_loop, thread_safe_entry
from resilient._stall import Stall, capture_stall
from resilient._utilization import IdleMeter, install_idle_meter
from resilient._validate import at_least, in_range
from resilient.metrics._catalog import EVENT_LOOP_DELAY, EVENT_LOOP_STALLS
from resilient.metrics._sink import Instrumented


if TYPE_CHECKING:
    from collections.abc import Callable

    from typing_extensions import Self

    from resilient.metrics._sink import MetricsSink


__all__ = ["LoopMonitor", "LoopStatistics"]

logger = logging.getLogger("resilient.loop")
_NO_ATTRIBUTES: dict[str, str] = {}
_STALL_ATTRIBUTES = {"blocked": {"kind": "blocked"}, "starved": {"kind": "starved"}}


@dataclass(frozen=True)
class LoopStatistics:
    """A snapshot of a `LoopMonitor`. Delays are in seconds.

    Attributes:
        current: the delay now: the age of an unanswered heartbeat, else the last answered delay.
        smoothed: exponentially weighted moving average of the answered delays.
        p50: median delay over the window of recent heartbeats.
        p90: 90th percentile over the window.
        p99: 99th percentile over the window.
        max: largest delay in the window.
        samples: heartbeats in the window.
        stalls: stalls seen since the monitor was created.
        utilization: fraction of time the loop was busy (not waiting for I/O) recently, or `None`
            unless the monitor was created with `utilization=True`.
    """

    current: float
    smoothed: float
    p50: float
    p90: float
    p99: float
    max: float
    samples: int
    stalls: int
    utilization: float | None


class LoopMonitor(Instrumented):
    """Measure event-loop delay from a watchdog thread, and name the code that blocks the loop.

    Args:
        interval: seconds between heartbeats (default 0.05; 0.001 to 10). Each heartbeat wakes
            a thread and the loop: about 0.5% of a core at the default, measured.
        stall_threshold: a heartbeat later than this is a stall (default 0.1; at least *interval*).
        window: how many recent heartbeats the percentiles cover (default 200, 10 s at 50 ms).
        smoothing: weight of the newest delay in the moving average (default 0.2; 0 < x <= 1).
        overload_delay: `is_overloaded()` is true while the current or smoothed delay exceeds this
            (default 0.07 s, toobusy's default).
        max_stalls: how many recent stalls `stalls()` keeps (default 20).
        utilization: also measure the fraction of time the loop is busy (asyncio and trio).
        name: reported in logs.
        sink: metrics sink; default: the process-wide default sink.

    Use `async with LoopMonitor() as monitor:` or `start()`/`stop()` from inside the loop. One
    monitor watches one loop; starting it again on the same loop does nothing. It stops by itself
    when its loop is closed.
    """

    __slots__ = (
        "_answered_at",
        "_delays",
        "_idle",
        "_lock",
        "_loop_thread",
        "_posted_at",
        "_recent_stalls",
        "_schedule",
        "_smoothed",
        "_stall_count",
        "_stopped",
        "_thread",
        "_token",
        "_utilization",
        "interval",
        "max_stalls",
        "overload_delay",
        "smoothing",
        "stall_threshold",
        "window",
    )

    def __init__(
        self,
        *,
        interval: float = 0.05,
        stall_threshold: float = 0.1,
        window: int = 200,
        smoothing: float = 0.2,
        overload_delay: float = 0.07,
        max_stalls: int = 20,
        utilization: bool = False,
        name: str | None = None,
        sink: MetricsSink | None = None,
    ) -> None:
        super().__init__(name, sink)
        self.interval = in_range("interval", interval, 0.001, 10.0)
        self.stall_threshold = in_range("stall_threshold", stall_threshold, self.interval, 3600.0)
        self.window = at_least("window", window, 1)
        self.smoothing = in_range("smoothing", smoothing, 0.0, 1.0, open_low=True)
        self.overload_delay = in_range("overload_delay", overload_delay, 0.0, 3600.0)
        self.max_stalls = at_least("max_stalls", max_stalls, 0)
        self._utilization: IdleMeter | None = IdleMeter() if utilization else None
        self._lock = threading.Lock()
        self._delays: collections.deque[float] = collections.deque(maxlen=self.window)
        self._recent_stalls: collections.deque[Stall] = collections.deque(maxlen=self.max_stalls)
        self._stall_count = 0
        self._smoothed = 0.0
        self._posted_at: float | None = None
        self._answered_at = 0.0
        # Held while running; stop() releases it, which wakes the watchdog's timed wait at once.
        self._stopped = threading.Lock()
        self._thread: threading.Thread | None = None
        self._token: object = None
        self._schedule: Callable[[Callable[[], object]], object] | None = None
        self._loop_thread = 0
        self._idle: Callable[[], None] | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching the running event loop (call it from inside that loop).

        Raises:
            RuntimeError: the monitor already watches another loop.
        """
        token = native_loop()
        if self.running:
            if token is self._token:
                return
            if self._loop_alive():
                msg = f"{self!r} already watches another event loop; create one monitor per loop"
                raise RuntimeError(msg)
            self.stop()  # its loop has ended, and the watchdog has not noticed yet
        self._token = token
        self._schedule = thread_safe_entry(token)
        self._loop_thread = threading.get_ident()
        if self._utilization is not None:
            self._idle = install_idle_meter(token, self._utilization)
        self._stopped.acquire(blocking=False)
        self._thread = threading.Thread(
            target=self._watch, name=f"resilient-loop-monitor-{self.name or id(self)}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; safe to call more than once, and from any thread."""
        thread, self._thread = self._thread, None
        if self._stopped.locked():
            self._stopped.release()
        if self._idle is not None:
            uninstall, self._idle = self._idle, None
            uninstall()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1)  # it wakes at once; bounded, as this may run on the loop

    @property
    def running(self) -> bool:
        """Whether the watchdog thread is running."""
        return self._thread is not None and self._thread.is_alive()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()

    # --- readings --------------------------------------------------------------------------------

    @property
    def current_delay(self) -> float:
        """The delay now: an unanswered heartbeat counts with its age, so a blocked loop shows."""
        posted, answered = self._posted_at, self._answered_at
        last = self._delays[-1] if self._delays else 0.0
        if posted is None:
            return last
        if answered:  # answered, not yet recorded: the watchdog looks once per interval
            return max(last, answered - posted)
        return max(last, time.perf_counter() - posted)

    def is_overloaded(self) -> bool:
        """Health signal: the current or smoothed delay is above `overload_delay`."""
        return self.current_delay > self.overload_delay or self._smoothed > self.overload_delay

    def statistics(self) -> LoopStatistics:
        """Return a snapshot of the delays, stalls and (if measured) utilization."""
        with self._lock:
            delays = sorted(self._delays)
            stalls = self._stall_count
        utilization = self._utilization.utilization() if self._utilization else None
        return LoopStatistics(
            current=self.current_delay,
            smoothed=self._smoothed,
            p50=_percentile(delays, 0.50),
            p90=_percentile(delays, 0.90),
            p99=_percentile(delays, 0.99),
            max=delays[-1] if delays else 0.0,
            samples=len(delays),
            stalls=stalls,
            utilization=utilization,
        )

    def stalls(self) -> tuple[Stall, ...]:
        """Return the most recent stalls (at most `max_stalls`), oldest first."""
        with self._lock:
            return tuple(self._recent_stalls)

    # --- the watchdog thread ---------------------------------------------------------------------

    def _beat(self) -> None:
        # Runs in the loop: one clock read and one attribute store, nothing else.
        self._answered_at = time.perf_counter()

    def _watch(self) -> None:
        # One timed wait per heartbeat: post, wait an interval, look. Waiting for the answer and
        # then pausing would cost a second thread wake-up per beat (measured: about twice the CPU).
        while True:
            self._answered_at = 0.0
            posted = time.perf_counter()
            if not self._post(self._beat):
                return
            self._posted_at = posted
            outcome, stall = self._wait_for_answer(posted)
            self._posted_at = None
            if self._answered_at:  # recorded even when stopping: it came in meanwhile
                delay = self._answered_at - posted
                self._record(delay)
                if stall is not None:
                    self._end_stall(stall, delay)
            if outcome != "answered":
                return

    def _wait_for_answer(self, posted: float) -> tuple[str, Stall | None]:
        """Wait for the heartbeat; report a stall at the threshold. Say why the wait ended."""
        interval, stopped = self.interval, self._stopped.acquire
        deadline = posted + self.stall_threshold
        stall: Stall | None = None
        while not self._answered_at:
            # Look again after an interval, or exactly when the heartbeat becomes a stall.
            wait = interval if stall else min(interval, deadline - time.perf_counter())
            if wait > 0 and stopped(timeout=wait):
                return "stopped", stall
            if self._answered_at:
                break
            if stall is None and time.perf_counter() < deadline:
                continue
            if not self._loop_alive():  # a loop that stopped is not a stalled one
                return "gone", stall
            if stall is None:
                stall = self._report_stall(posted)
        return "answered", stall

    def _report_stall(self, posted: float) -> Stall:
        frame = sys._current_frames().get(self._loop_thread)
        stall = capture_stall(frame, posted)
        del frame  # keep no reference to the loop thread's frames
        with self._lock:
            self._stall_count += 1
            self._recent_stalls.append(stall)
        self._emit(EVENT_LOOP_STALLS, 1, _STALL_ATTRIBUTES[stall.kind])
        logger.warning("%s", stall.format(), extra={"stall": stall, "monitor": self.name})
        return stall

    def _end_stall(self, stall: Stall, delay: float) -> None:
        ended = stall.ended(delay)
        with self._lock:
            for i, recent in enumerate(self._recent_stalls):
                if recent is stall:
                    self._recent_stalls[i] = ended

    def _post(self, callback: Callable[[], object]) -> bool:
        assert self._schedule is not None  # noqa: S101 - set by start() before the thread runs
        try:
            self._schedule(callback)
        except Exception:  # noqa: BLE001 - asyncio: RuntimeError; trio: RunFinishedError
            return False
        return True

    def _loop_alive(self) -> bool:
        is_running: Any = getattr(self._token, "is_running", None)
        if is_running is not None:  # asyncio answers directly
            return bool(is_running())
        return self._post(_nothing)  # trio: a finished run refuses new callbacks

    def _record(self, delay: float) -> None:
        with self._lock:
            self._delays.append(delay)
            self._smoothed += self.smoothing * (delay - self._smoothed)
        if self._utilization is not None:
            self._utilization.sample()
        self._emit(EVENT_LOOP_DELAY, delay, _NO_ATTRIBUTES)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LoopMonitor(name={self.name!r}, interval={self.interval}, {state})"


def _nothing() -> None:
    pass


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]
