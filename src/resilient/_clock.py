"""Time, injected: every decision in resilient reads a `Clock`, never the wall clock.

Policies take `clock=` at construction. Production code uses `SystemClock` (monotonic seconds and
anyio's sleep); tests pass `resilient.testing.FakeClock` and move time by hand, so state machines
run deterministically without patching the `time` module.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import anyio


__all__ = ["Clock", "SystemClock", "system_clock"]


@runtime_checkable
class Clock(Protocol):
    """A monotonic clock: `now()` in seconds, and an async `sleep()`.

    `now()` has an arbitrary origin; only differences between readings mean anything.
    """

    def now(self) -> float:
        """Return monotonic seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for *seconds* (or let virtual time pass, for a fake clock)."""
        ...


class SystemClock:
    """The real clock: `time.monotonic()` and `anyio.sleep()` (asyncio and trio alike)."""

    __slots__ = ()

    # A staticmethod alias, so that `clock.now()` is a single C call on the hot path.
    now = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        """Sleep for *seconds* on the running event loop."""
        await anyio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


system_clock = SystemClock()
"""The shared default clock; stateless, so one instance serves every policy."""
