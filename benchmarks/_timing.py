"""Shared timing harness for the micro-benchmarks: calibrated loops, round-robin repeats, medians.

Each case is a zero-argument factory that returns a `run(n) -> seconds` function timing `n` calls.
Cases are repeated round-robin (alternating direction each round) with the GC off, so slow drifts
of a noisy machine hit every case alike; the median of the repeats is reported.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any


Runner = Callable[[int], float]


def sync_runner(fn: Callable[[int], Any]) -> Runner:
    """Time `n` calls of `fn(1)`."""

    def run(n: int) -> float:
        rng = range(n)
        start = time.perf_counter()
        for _ in rng:
            fn(1)
        return time.perf_counter() - start

    return run


def async_runner(fn: Callable[[int], Awaitable[Any]], backend: str = "asyncio") -> Runner:
    """Time `n` awaited calls of `fn(1)` inside one event loop."""
    import anyio  # noqa: PLC0415

    def run(n: int) -> float:
        async def main() -> float:
            rng = range(n)
            start = time.perf_counter()
            for _ in rng:
                await fn(1)
            return time.perf_counter() - start

        return anyio.run(main, backend=backend)

    return run


def calibrate(run: Runner, target: float = 0.08) -> int:
    """Return a call count that makes one repeat of *run* take about *target* seconds."""
    n = 1000
    while True:
        took = run(n)
        if took > target / 4 or n > 50_000_000:
            return max(1000, int(n * target / max(took, 1e-9)))
        n *= 4


def measure(cases: dict[str, Runner], repeats: int = 9, target: float = 0.08) -> dict[str, float]:
    """Return the median nanoseconds per call of each case."""
    counts = {name: calibrate(run, target) for name, run in cases.items()}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(repeats):
            for name in order if i % 2 == 0 else reversed(order):
                samples[name].append(cases[name](counts[name]) / counts[name] * 1e9)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


def report(title: str, results: dict[str, float], baseline: str) -> None:
    """Print ns/call, overhead over *baseline*, and multiples of the baseline."""
    base = results[baseline]
    print(f"\n{title}")
    print(f"{'case':<44} {'ns/call':>9} {'overhead':>9} {'x base':>7}")
    for name, ns in results.items():
        print(f"{name:<44} {ns:>9.1f} {ns - base:>+9.1f} {ns / base:>7.2f}")
