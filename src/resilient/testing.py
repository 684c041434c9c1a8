"""Helpers for testing code that uses resilient: a fake clock and metric capture.

```python
from resilient.testing import FakeClock, capture_metrics

clock = FakeClock()
with capture_metrics() as sink:
    ...  # build policies with clock=clock, drive them, clock.advance(30)
assert sink.total(CIRCUIT_BREAKER_TRANSITIONS) == 1
```
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from resilient.metrics import InMemorySink, set_default_sink


if TYPE_CHECKING:
    from collections.abc import Generator


__all__ = ["FakeClock", "capture_metrics"]


class FakeClock:
    """A `Clock` whose time moves only when told to.

    Args:
        start: the initial reading of `now()`.
        autojump: what `sleep()` does. `True` (the default): move virtual time forward to the
            sleeper's deadline at once, then yield to the event loop once, so sleeping code runs
            at full speed. Sleeps in concurrent tasks therefore add up rather than overlap.
            `False`: wait until `advance()` moves time past the deadline, so a test can
            interleave tasks precisely.

    `now()` and `advance()` may be called from any thread. With `autojump=False`, call `advance()`
    from the event loop that runs the sleepers.
    """

    __slots__ = ("_autojump", "_lock", "_sleepers", "_time")

    def __init__(self, start: float = 0.0, *, autojump: bool = True) -> None:
        if not isinstance(start, (int, float)) or not math.isfinite(start):
            msg = f"start must be a finite number, got {start!r}"
            raise ValueError(msg)
        self._time = float(start)
        self._autojump = bool(autojump)
        self._lock = threading.Lock()
        self._sleepers: list[tuple[float, anyio.Event]] = []

    def now(self) -> float:
        """Return the virtual time."""
        return self._time

    def advance(self, seconds: float) -> None:
        """Move virtual time forward and wake every sleeper whose deadline has come.

        Raises:
            ValueError: *seconds* is negative or not finite (monotonic time never goes back).
        """
        if not math.isfinite(seconds) or seconds < 0:
            msg = f"seconds must be a finite number >= 0, got {seconds!r}"
            raise ValueError(msg)
        with self._lock:
            self._time += seconds
            now = self._time
            due = [event for deadline, event in self._sleepers if deadline <= now]
            self._sleepers = [(d, e) for d, e in self._sleepers if d > now]
        for event in due:
            event.set()

    async def sleep(self, seconds: float) -> None:
        """Let *seconds* of virtual time pass (see *autojump*); always a checkpoint."""
        if seconds > 0:
            if self._autojump:
                self.advance(seconds)
            else:
                with self._lock:
                    deadline = self._time + seconds
                    event = anyio.Event()
                    self._sleepers.append((deadline, event))
                await event.wait()
                return
        await anyio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return f"FakeClock(now={self._time!r}, autojump={self._autojump!r})"


@contextlib.contextmanager
def capture_metrics() -> Generator[InMemorySink, None, None]:
    """Make a fresh `InMemorySink` the default sink for the duration of the block, and yield it.

    Policies created without `sink=` report to it, whether they were created before the block or
    inside it. The previous default is restored on exit.
    """
    sink = InMemorySink()
    previous = set_default_sink(sink)
    try:
        yield sink
    finally:
        set_default_sink(previous)
