"""Module-level functions for offload tests: a worker process imports them by name."""

from __future__ import annotations

import functools
import os
import signal
import time
from typing import Any

from resilient import offload


@offload(kind="process", max_concurrent=2)
def square(x: int) -> int:
    return x * x


@offload(kind="process", max_concurrent=2)
def die(how: str) -> None:
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(3)


@offload(kind="process", max_concurrent=1, timeout=0.5)
def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@offload(kind="process", max_concurrent=4, max_waiting=1000)
def interval(seconds: float) -> tuple[float, float]:
    """Return when this call started and ended (CLOCK_MONOTONIC is shared by processes)."""
    start = time.monotonic()
    time.sleep(seconds)
    return start, time.monotonic()


@offload(kind="process")
def unpicklable_result() -> object:
    return lambda: None


@offload(kind="process")
def fail(message: str) -> None:
    raise ValueError(message)


class Shapes:
    @staticmethod
    @offload(kind="process")
    def area(width: int, height: int) -> int:
        return width * height


def traced(fn: Any) -> Any:
    """An outer decorator above offload: the worker must look through it."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    return wrapper


@traced
@offload(kind="process")
def cube(x: int) -> int:
    return x**3


def bare(fn: Any) -> Any:
    """An outer decorator that keeps only __wrapped__ (no copied __dict__)."""

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


@bare
@offload(kind="process")
def negate(x: int) -> int:
    return -x


@offload(kind="process", timeout=0.05)
def quick_double(x: int) -> int:
    return 2 * x
