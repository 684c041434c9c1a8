"""Helpers for the concurrency-limit tests: waiters that cannot be woken, threads that queue."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import anyio.lowlevel

from resilient._limit_parts import Waiter


if TYPE_CHECKING:
    from collections.abc import Callable

    from resilient._limit import LimitCore


async def settle(rounds: int = 30) -> None:
    """Let every runnable task run until it blocks."""
    for _ in range(rounds):
        await anyio.lowlevel.checkpoint()


def queue_dead_waiter(
    limit: LimitCore[Any], since: float = 0.0, budget: float | None = None
) -> Waiter:
    """Queue a waiter whose event loop is gone: its wake-up raises, as a closed loop's does."""

    def closed(callback: object) -> None:
        raise RuntimeError("Event loop is closed")

    waiter = Waiter(threading.Event(), closed, since, budget)
    waiter.thread = -1  # never "this thread": always through its (dead) loop
    with limit._lock:
        limit._queue.append(waiter)
        limit._queued += 1
    return waiter


def start_queued_thread(
    limit: LimitCore[Any], target: Callable[[], object], waiting: int
) -> threading.Thread:
    """Start *target* in a thread, and return once *limit* has *waiting* callers queued."""
    thread = threading.Thread(target=target)
    thread.start()
    while limit.statistics().waiting < waiting:
        time.sleep(0.001)
    return thread
