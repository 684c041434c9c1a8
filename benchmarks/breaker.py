"""Per-call cost of a circuit breaker: resilient against the Python peers, closed and open.

Run it pinned to one core, for example::

    taskset -c 1 .venv/bin/python benchmarks/breaker.py

Each case is calibrated so that one repeat takes about `--target` seconds, then every case of a
group is timed `--repeats` times round-robin (the order alternates each repeat) with the GC off;
the tables show the median ns/call. "overhead" is the case minus the bare call. Open-state loops
catch the rejection and drop its traceback, uniformly for every case.

Peers, where they support the mode: pybreaker (sync only: its async support is Tornado's),
circuitbreaker, aiobreaker, purgatory. Also resilient closed with the default no-op sink against
an OpenTelemetry SDK `MeterProvider` (with an `InMemoryMetricReader`) behind `OTelSink`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import statistics
import sys
import time
from typing import TYPE_CHECKING, Any

import aiobreaker
import circuitbreaker
import purgatory
import pybreaker
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from resilient import Backoff, CircuitBreaker, ConsecutiveFailures, FailureRate
from resilient.metrics import OTelSink


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


THRESHOLD = 5
LONG = 3600.0


def f(x: int) -> int:
    return x + 1


async def af(x: int) -> int:
    return x + 1


class BoomError(Exception):
    pass


def fail(x: int) -> int:
    raise BoomError


async def afail(x: int) -> int:
    raise BoomError


def raise_floor(x: int) -> int:
    raise BoomError


async def araise_floor(x: int) -> int:
    raise BoomError


# --- breakers under test: each factory returns (ok_callable, failing_callable) ---------------


def resilient_default(fn: Any, failing: Any, sink: Any = None) -> tuple[Any, Any]:
    b = CircuitBreaker("bench", sink=sink, backoff=Backoff(LONG, 1, LONG, 0))
    return b(fn), b(failing)


def resilient_consecutive(fn: Any, failing: Any, sink: Any = None) -> tuple[Any, Any]:
    b = CircuitBreaker(
        "bench", trip=ConsecutiveFailures(THRESHOLD), sink=sink, backoff=Backoff(LONG, 1, LONG, 0)
    )
    return b(fn), b(failing)


def resilient_timed(fn: Any, slow: float | None = 1.0) -> Any:
    """The costlier configurations: a time window, and slow-call timing (both read the clock)."""
    trip = FailureRate(0.5, seconds=60, slow_call_duration=slow)
    return CircuitBreaker("bench", trip=trip)(fn)


def pybreaker_(fn: Any, failing: Any) -> tuple[Any, Any]:
    b = pybreaker.CircuitBreaker(fail_max=THRESHOLD, reset_timeout=LONG)
    return b(fn), b(failing)


def circuitbreaker_(fn: Any, failing: Any) -> tuple[Any, Any]:
    b = circuitbreaker.CircuitBreaker(failure_threshold=THRESHOLD, recovery_timeout=LONG)
    return b(fn), b(failing)


def aiobreaker_(fn: Any, failing: Any) -> tuple[Any, Any]:
    b = aiobreaker.CircuitBreaker(fail_max=THRESHOLD, timeout_duration=dt.timedelta(seconds=LONG))
    return b(fn), b(failing)


_purgatory_sync = purgatory.SyncCircuitBreakerFactory(default_threshold=THRESHOLD, default_ttl=LONG)
_purgatory_async = purgatory.AsyncCircuitBreakerFactory(
    default_threshold=THRESHOLD, default_ttl=LONG
)
_purgatory_names = iter(range(10**9))


def purgatory_(fn: Any, failing: Any) -> tuple[Any, Any]:
    factory = _purgatory_async if asyncio.iscoroutinefunction(fn) else _purgatory_sync
    name = f"bench{next(_purgatory_names)}"
    return factory(name)(fn), factory(name)(failing)


def otel_sink() -> OTelSink:
    return OTelSink(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))


# --- timing -------------------------------------------------------------------------------------


def sync_loop(fn: Callable[[int], Any], n: int, opened: bool) -> int:
    rng = range(n)
    if opened:
        t0 = time.perf_counter_ns()
        for _ in rng:
            try:
                fn(1)
            except Exception as exc:  # noqa: PERF203 - the rejection is what is timed
                exc.__traceback__ = None
        return time.perf_counter_ns() - t0
    t0 = time.perf_counter_ns()
    for _ in rng:
        fn(1)
    return time.perf_counter_ns() - t0


async def async_loop(fn: Callable[[int], Awaitable[Any]], n: int, opened: bool) -> int:
    rng = range(n)
    if opened:
        t0 = time.perf_counter_ns()
        for _ in rng:
            try:
                await fn(1)
            except Exception as exc:  # noqa: PERF203 - the rejection is what is timed
                exc.__traceback__ = None
        return time.perf_counter_ns() - t0
    t0 = time.perf_counter_ns()
    for _ in rng:
        await fn(1)
    return time.perf_counter_ns() - t0


Case = tuple[str, str, Any]  # (label, state, callable)


def sync_cases() -> list[Case]:
    cases: list[Case] = [("bare call", "closed", f), ("raise + catch floor", "open", raise_floor)]
    makers = [
        ("resilient (default FailureRate)", resilient_default),
        ("resilient ConsecutiveFailures(5)", resilient_consecutive),
        ("pybreaker", pybreaker_),
        ("circuitbreaker", circuitbreaker_),
        ("aiobreaker (sync)", aiobreaker_),
        ("purgatory", purgatory_),
    ]
    for label, make in makers:
        ok, _ = make(f, fail)
        cases.append((label, "closed", ok))
        ok, bad = make(f, fail)
        for _ in range(30):  # trip it (the default model needs 20 calls)
            with contextlib.suppress(Exception):
                bad(1)
        cases.append((label, "open", ok))
    ok, _ = resilient_default(f, fail, otel_sink())
    cases.append(("resilient (default) + OTelSink(SDK)", "closed", ok))
    cases.append(("resilient FailureRate(seconds)", "closed", resilient_timed(f, None)))
    cases.append(("resilient FailureRate(seconds, slow)", "closed", resilient_timed(f)))
    return cases


async def async_cases() -> list[Case]:
    cases: list[Case] = [("bare call", "closed", af), ("raise + catch floor", "open", araise_floor)]
    makers = [
        ("resilient (default FailureRate)", resilient_default),
        ("resilient ConsecutiveFailures(5)", resilient_consecutive),
        ("circuitbreaker", circuitbreaker_),
        ("aiobreaker", aiobreaker_),
        ("purgatory", purgatory_),
    ]
    for label, make in makers:
        ok, _ = make(af, afail)
        cases.append((label, "closed", ok))
        ok, bad = make(af, afail)
        for _ in range(30):
            with contextlib.suppress(Exception):
                await bad(1)
        cases.append((label, "open", ok))
    ok, _ = resilient_default(af, afail, otel_sink())
    cases.append(("resilient (default) + OTelSink(SDK)", "closed", ok))
    cases.append(("resilient FailureRate(seconds)", "closed", resilient_timed(af, None)))
    cases.append(("resilient FailureRate(seconds, slow)", "closed", resilient_timed(af)))
    return cases


def calibrate(run: Callable[[int], int], target_ns: float) -> int:
    n = 1000
    while True:
        took = run(n)
        if took >= target_ns / 4:
            return max(1, int(n * target_ns / took))
        n *= 4


def measure_sync(cases: list[Case], repeats: int, target: float) -> dict[tuple[str, str], float]:
    loops = [
        calibrate(lambda n, c=c: sync_loop(c[2], n, c[1] == "open"), target * 1e9) for c in cases
    ]
    samples: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    for r in range(repeats):
        order = range(len(cases)) if r % 2 == 0 else reversed(range(len(cases)))
        for i in order:
            _, state, fn = cases[i]
            samples[i].append(sync_loop(fn, loops[i], state == "open") / loops[i])
    return {(c[0], c[1]): statistics.median(samples[i]) for i, c in enumerate(cases)}


async def measure_async(
    cases: list[Case], repeats: int, target: float
) -> dict[tuple[str, str], float]:
    loops = []
    for _, state, fn in cases:
        n = 1000
        while True:
            took = await async_loop(fn, n, state == "open")
            if took >= target * 1e9 / 4:
                loops.append(max(1, int(n * target * 1e9 / took)))
                break
            n *= 4
    samples: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    for r in range(repeats):
        order = range(len(cases)) if r % 2 == 0 else reversed(range(len(cases)))
        for i in order:
            _, state, fn = cases[i]
            samples[i].append(await async_loop(fn, loops[i], state == "open") / loops[i])
    return {(c[0], c[1]): statistics.median(samples[i]) for i, c in enumerate(cases)}


def report(title: str, results: dict[tuple[str, str], float]) -> dict[str, float]:
    base = results["bare call", "closed"]
    print(f"\n### {title} (bare call {base:.0f} ns/call)\n")
    print(f"| {'case':<38} | state  | ns/call | overhead ns |")
    print(f"|{'-' * 40}|--------|--------:|------------:|")
    for (label, state), ns in results.items():
        print(f"| {label:<38} | {state:<6} | {ns:7.0f} | {ns - base:11.0f} |")
    peers = {
        k: v for k, v in results.items() if not k[0].startswith(("resilient", "bare", "raise"))
    }
    ours = results["resilient (default FailureRate)", "closed"]
    ours_consecutive = results["resilient ConsecutiveFailures(5)", "closed"]
    best_closed = min((v, label) for (label, state), v in peers.items() if state == "closed")
    best_open = min((v, label) for (label, state), v in peers.items() if state == "open")
    ours_open = max(
        results["resilient (default FailureRate)", "open"],
        results["resilient ConsecutiveFailures(5)", "open"],
    )
    otel = results["resilient (default) + OTelSink(SDK)", "closed"]
    summary = {
        "closed ratio (default)": (ours - base) / (best_closed[0] - base),
        "closed ratio (consecutive)": (ours_consecutive - base) / (best_closed[0] - base),
        "open ratio": ours_open / best_open[0],
        "otel/noop overhead": (otel - base) / (ours - base),
    }
    print()
    print(
        f"closed overhead / best peer's ({best_closed[1]}, +{best_closed[0] - base:.0f} ns): "
        f"default {summary['closed ratio (default)']:.2f}x, "
        f"ConsecutiveFailures {summary['closed ratio (consecutive)']:.2f}x  (bar <= 0.6x)"
    )
    print(
        f"open (rejection) ns/call, resilient's slower model: {ours_open:.0f} vs best peer's "
        f"({best_open[1]}) {best_open[0]:.0f}: {summary['open ratio']:.2f}x  (bar < 1)"
    )
    print(
        f"closed overhead with OTelSink(SDK) / no-op sink: {summary['otel/noop overhead']:.2f}x "
        "(bar <= 2x)"
    )
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--target", type=float, default=0.08, help="seconds per repeat per case")
    args = parser.parse_args()
    gc.disable()
    print(f"Python {sys.version.split()[0]}, {args.repeats} repeats, ~{args.target}s each; medians")
    sync_results = measure_sync(sync_cases(), args.repeats, args.target)

    async def run_async() -> dict[tuple[str, str], float]:
        return await measure_async(await async_cases(), args.repeats, args.target)

    async_results = asyncio.run(run_async())
    gc.enable()
    report("sync", sync_results)
    report("async (asyncio)", async_results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
