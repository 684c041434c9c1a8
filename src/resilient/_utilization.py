"""Event-loop utilization: the fraction of time the loop is busy rather than waiting for I/O.

Node calls it ELU. The loop is idle exactly while it waits in its I/O poll, so we time that wait:
on asyncio by wrapping the loop's selector (`select()`), on trio with a public instrument
(`before_io_wait`/`after_io_wait`). Opt-in: it adds two clock reads per loop iteration.
"""

from __future__ import annotations

import collections
import contextlib
import sys
import threading
import time
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from collections.abc import Callable


__all__ = ["IdleMeter", "install_idle_meter"]

_WINDOW = 1.0  # seconds of history that utilization() covers


class IdleMeter:
    """Accumulates idle time (from the loop thread) and turns it into a recent utilization."""

    __slots__ = ("_history", "_lock", "idle")

    def __init__(self) -> None:
        self.idle = 0.0  # written only by the loop thread
        self._lock = threading.Lock()
        self._history: collections.deque[tuple[float, float]] = collections.deque()

    def add_idle(self, seconds: float) -> None:
        self.idle += seconds

    def sample(self) -> tuple[float, float, float, float]:
        """Note the idle total now; return (now, idle, then, idle then) across the window."""
        now, idle = time.perf_counter(), self.idle
        with self._lock:
            history = self._history
            history.append((now, idle))
            # Keep the newest reading at least _WINDOW old as the start of the window.
            while len(history) > 2 and now - history[1][0] >= _WINDOW:  # noqa: PLR2004
                history.popleft()
            then, idle_then = history[0]
        return now, idle, then, idle_then

    def utilization(self) -> float | None:
        """Busy fraction over about the last second; `None` before there are two readings."""
        now, idle, then, idle_then = self.sample()
        elapsed = now - then
        if elapsed <= 0:
            return None
        return min(1.0, max(0.0, 1.0 - (idle - idle_then) / elapsed))


def install_idle_meter(native_token: object, meter: IdleMeter) -> Callable[[], None]:
    """Start timing the loop's I/O waits (call from the loop's thread); return the undo function.

    Raises:
        TypeError: the loop cannot be instrumented (an asyncio loop without a selector, such as
            uvloop or the Windows proactor loop).
    """
    if hasattr(native_token, "call_soon_threadsafe"):
        return _install_asyncio(native_token, meter)
    return _install_trio(meter)


class _TimedSelector:
    """Delegates to the loop's selector, timing each `select()`."""

    def __init__(self, selector: Any, meter: IdleMeter) -> None:
        self.selector = selector
        self._meter = meter

    def select(self, timeout: float | None = None) -> Any:
        start = time.perf_counter()
        try:
            return self.selector.select(timeout)
        finally:
            self._meter.add_idle(time.perf_counter() - start)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.selector, name)


def _install_asyncio(loop: Any, meter: IdleMeter) -> Callable[[], None]:
    selector = getattr(loop, "_selector", None)
    if selector is None:
        msg = f"utilization=True needs a selector event loop; {type(loop).__name__} has none"
        raise TypeError(msg)
    timed = _TimedSelector(selector, meter)
    loop._selector = timed

    def uninstall() -> None:
        if loop._selector is timed:
            loop._selector = selector

    return uninstall


def _install_trio(meter: IdleMeter) -> Callable[[], None]:
    trio = sys.modules["trio"]  # the running loop is trio's, so trio is imported

    class IdleInstrument(trio.abc.Instrument):  # type: ignore[misc,name-defined]
        started = 0.0

        def before_io_wait(self, timeout: float) -> None:  # noqa: ARG002 - trio's signature
            self.started = time.perf_counter()

        def after_io_wait(self, timeout: float) -> None:  # noqa: ARG002 - trio's signature
            meter.add_idle(time.perf_counter() - self.started)

    instrument = IdleInstrument()
    trio.lowlevel.add_instrument(instrument)

    def uninstall() -> None:
        # KeyError: already removed; RuntimeError: the run has finished.
        with contextlib.suppress(KeyError, RuntimeError):
            trio.lowlevel.remove_instrument(instrument)

    return uninstall
