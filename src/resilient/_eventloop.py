"""The running event loop, whichever it is: its native handle and its thread-safe entry point.

Used by whatever must reach a loop from another thread: a concurrency limit waking a waiter when
a permit is released on a worker thread, and the loop monitor posting its heartbeats.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

import anyio.lowlevel


if TYPE_CHECKING:
    from collections.abc import Callable


__all__ = ["native_loop", "on_event_loop", "thread_safe_entry"]


def native_loop() -> Any:
    """Return the running loop's native handle: the asyncio loop, or trio's token."""
    return anyio.lowlevel.current_token().native_token


def thread_safe_entry(native: Any) -> Callable[[Callable[[], object]], object]:
    """Return *native*'s "call this soon, from any thread" function.

    An asyncio loop has `call_soon_threadsafe`; a trio token has `run_sync_soon`.
    """
    entry = getattr(native, "call_soon_threadsafe", None)
    return entry if entry is not None else native.run_sync_soon  # type: ignore[no-any-return]


def on_event_loop() -> bool:
    """Tell whether this thread is running an event loop (asyncio or trio) right now.

    True in a task and in a plain loop callback alike (`loop.call_soon`, a protocol's
    `data_received`, trio's `run_sync_soon`): sniffio, and so anyio, see asyncio only inside a
    task, and a sync caller blocking a loop callback would wait for what only that loop can do.
    """
    if asyncio._get_running_loop() is not None:
        return True
    trio = sys.modules.get("trio")  # never import trio: if nobody did, no trio run is going on
    return trio is not None and bool(trio.lowlevel.in_trio_run())
