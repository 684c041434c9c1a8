"""Uncontended cost of a ConcurrencyLimit permit, against the semaphores people use instead.

Run: `taskset -c 1 .venv/bin/python benchmarks/concurrency.py` (add `--quick` for a smoke run).

Each case is a loop of acquire + call + release around a trivial function. Loops are calibrated
to about `--target` seconds per repeat, then every case is timed `--repeats` times round-robin
(the order reverses on every other repeat) with the GC disabled; the table shows medians.
The bar: our async paths (decorator and `async with`) cost no more than `asyncio.Semaphore`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import threading
import time
from typing import TYPE_CHECKING

import anyio

from resilient import AdaptiveConcurrencyLimit, ConcurrencyLimit


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


def _calibrate(run: Callable[[int], float], target: float) -> int:
    n = 1000
    while True:
        elapsed = run(n)
        if elapsed >= target / 4:
            return max(1000, int(n * target / elapsed))
        n *= 4


def _measure(
    cases: dict[str, Callable[[int], float]], repeats: int, target: float
) -> dict[str, float]:
    loops = {name: _calibrate(run, target) for name, run in cases.items()}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    gc.disable()
    try:
        for r in range(repeats):
            for name in names if r % 2 == 0 else reversed(names):
                n = loops[name]
                samples[name].append(cases[name](n) / n * 1e9)
    finally:
        gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


# --- async group ------------------------------------------------------------------------------


async def af(x: int) -> int:
    return x + 1


def async_cases(loop: asyncio.AbstractEventLoop) -> dict[str, Callable[[int], float]]:
    limit = ConcurrencyLimit(1000)
    limited = limit(af)
    adaptive = AdaptiveConcurrencyLimit(initial_limit=1000, min_limit=1000, max_limit=1000)(af)
    sem = asyncio.Semaphore(1000)
    limiter = anyio.CapacityLimiter(1000)

    async def baseline(n: int) -> None:
        for i in range(n):
            await af(i)

    async def ours_decorator(n: int) -> None:
        for i in range(n):
            await limited(i)

    async def adaptive_decorator(n: int) -> None:
        for i in range(n):
            await adaptive(i)

    async def ours_async_with(n: int) -> None:
        for i in range(n):
            async with limit:
                await af(i)

    async def asyncio_semaphore(n: int) -> None:
        for i in range(n):
            async with sem:
                await af(i)

    async def anyio_capacity_limiter(n: int) -> None:
        for i in range(n):
            async with limiter:
                await af(i)

    async def anyio_capacity_limiter_nowait(n: int) -> None:
        for i in range(n):
            limiter.acquire_nowait()
            try:
                await af(i)
            finally:
                limiter.release()

    def timed(body: Callable[[int], Awaitable[None]]) -> Callable[[int], float]:
        def run(n: int) -> float:
            start = time.perf_counter()
            loop.run_until_complete(body(n))
            return time.perf_counter() - start

        return run

    return {
        "bare await (baseline)": timed(baseline),
        "resilient @limit (async def)": timed(ours_decorator),
        "resilient async with limit": timed(ours_async_with),
        "asyncio.Semaphore async with": timed(asyncio_semaphore),
        "anyio CapacityLimiter async with": timed(anyio_capacity_limiter),
        "anyio CapacityLimiter acquire_nowait/release": timed(anyio_capacity_limiter_nowait),
        "resilient adaptive @limit (async def; info)": timed(adaptive_decorator),
    }


# --- sync group -------------------------------------------------------------------------------


def f(x: int) -> int:
    return x + 1


def sync_cases() -> dict[str, Callable[[int], float]]:
    limit = ConcurrencyLimit(1000)
    limited = limit(f)
    sem = threading.Semaphore(1000)
    bsem = threading.BoundedSemaphore(1000)

    def baseline(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            f(i)
        return time.perf_counter() - start

    def ours_decorator(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            limited(i)
        return time.perf_counter() - start

    def ours_with(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            with limit:
                f(i)
        return time.perf_counter() - start

    def threading_semaphore(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            with sem:
                f(i)
        return time.perf_counter() - start

    def threading_bounded_semaphore(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            with bsem:
                f(i)
        return time.perf_counter() - start

    return {
        "plain call (baseline)": baseline,
        "resilient @limit (def)": ours_decorator,
        "resilient with limit": ours_with,
        "threading.Semaphore with": threading_semaphore,
        "threading.BoundedSemaphore with": threading_bounded_semaphore,
    }


def _table(title: str, results: dict[str, float], baseline: str, reference: str) -> None:
    base, ref = results[baseline], results[reference]
    print(f"\n{title}")
    print(
        f"{'case':<46} {'ns/call':>9} {'overhead':>9} {'x ' + reference.split(maxsplit=1)[0]:>22}"
    )
    for name, ns in results.items():
        print(f"{name:<46} {ns:>9.0f} {ns - base:>+9.0f} {ns / ref:>22.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--target", type=float, default=0.12, help="seconds per timed repeat")
    parser.add_argument("--quick", action="store_true", help="3 short repeats (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.target = 3, 0.02
    print(
        f"Python {sys.version.split()[0]}, {args.repeats} repeats round-robin, ~{args.target}s each"
    )

    loop = asyncio.new_event_loop()
    try:
        async_results = _measure(async_cases(loop), args.repeats, args.target)
    finally:
        loop.close()
    sync_results = _measure(sync_cases(), args.repeats, args.target)

    _table(
        "async (one asyncio loop, uncontended)",
        async_results,
        "bare await (baseline)",
        "asyncio.Semaphore async with",
    )
    _table(
        "sync (one thread, uncontended)",
        sync_results,
        "plain call (baseline)",
        "threading.Semaphore with",
    )

    sem = async_results["asyncio.Semaphore async with"]
    bars = {
        "@limit (async) <= asyncio.Semaphore": async_results["resilient @limit (async def)"] <= sem,
        "async with limit <= asyncio.Semaphore": async_results["resilient async with limit"] <= sem,
    }
    print()
    for bar, ok in bars.items():
        print(f"{'PASS' if ok else 'FAIL'}  {bar}")
    return 0 if all(bars.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
