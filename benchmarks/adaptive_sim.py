"""Deterministic simulation: does AdaptiveConcurrencyLimit find a service's concurrency knee?

Run: `taskset -c 1 .venv/bin/python benchmarks/adaptive_sim.py` (seconds; exit 1 if a bar fails).

The service is a processor-sharing server with `K` cores: with `n` calls in flight each progresses
at `min(1, K/n)` of full speed, times an efficiency `1 / (1 + thrash * max(0, n - K) / K)` (past
the knee, contention wastes capacity: locks, cache misses, GC). So throughput rises linearly up to
`K` in flight, then falls slowly, while latency is flat up to `K`, then climbs. Work per call is
exponential (mean `service` seconds). Arrivals are open-loop Poisson at `overload` times capacity.
Calls the limit rejects are dropped (no queue, `max_waiting=0`), and a completed call counts as
goodput only if it finished within the client deadline.

Time is a `FakeClock` advanced by a discrete-event loop (virtual-time processor sharing: one heap
of finish marks), and the limits are driven through their policy hooks exactly as the decorator
drives them, so the real code decides. Same seed, same output.

Bars (steady state, after the warm-up): the adaptive limit settles within +-25% of K (its median
is inside, and it spends at least 90% of the time inside); its goodput is at least 90% of the best
static limit's (found by sweeping static limits; ties go to the lower p99), and its p99 latency is
at most 1.5x that static limit's.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

from resilient import AdaptiveConcurrencyLimit, ConcurrencyLimit, ConcurrencyLimitError
from resilient._wrap import MUST_WAIT
from resilient.testing import FakeClock


@dataclass
class Result:
    name: str
    goodput: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    rejected: float = 0.0
    limits: list[float] = field(default_factory=list)  # the limit once per trace step
    settled: float = 0.0  # median limit over the measured period


@dataclass(frozen=True)
class Service:
    knee: int = 32
    service: float = 0.020  # mean work per call, seconds at full speed
    thrash: float = 0.25
    overload: float = 1.5
    deadline: float = 1.0  # a call slower than this is not goodput (the client gave up)

    def speed(self, n: int) -> float:
        if n == 0:
            return 0.0
        return min(1.0, self.knee / n) / (1.0 + self.thrash * max(0, n - self.knee) / self.knee)


def simulate(
    name: str,
    make: Any,
    svc: Service,
    *,
    duration: float,
    warmup: float,
    seed: int,
    trace_step: float,
) -> Result:
    rng = random.Random(seed)
    clock = FakeClock()
    limit = make(clock)
    rate = svc.overload * svc.knee / svc.service
    t = 0.0
    virtual = 0.0  # service every in-flight call has received, seconds of full-speed work
    inflight: list[tuple[float, int, float, Any]] = []  # (finish mark, seq, arrival, token)
    seq = 0
    next_arrival = rng.expovariate(rate)
    next_trace = 0.0
    latencies: list[float] = []
    good = rejected = arrivals = 0
    result = Result(name)
    while t < duration:
        speed = svc.speed(len(inflight))
        done_at = t + (inflight[0][0] - virtual) / speed if inflight else math.inf
        event_at = min(next_arrival, done_at)
        while next_trace <= event_at and next_trace < duration:
            result.limits.append(limit.limit)
            next_trace += trace_step
        if inflight:
            virtual += speed * (event_at - t)
        clock.advance(event_at - t)
        t = event_at
        measured = t >= warmup
        if next_arrival <= done_at:
            next_arrival = t + rng.expovariate(rate)
            arrivals += measured
            try:
                token = limit._enter_nowait()
            except ConcurrencyLimitError:
                rejected += measured
                continue
            if token is MUST_WAIT:  # max_waiting=0: admitted or rejected, never waiting
                raise AssertionError(token)
            seq += 1
            heapq.heappush(inflight, (virtual + rng.expovariate(1 / svc.service), seq, t, token))
        else:
            mark, _, arrived, token = heapq.heappop(inflight)
            virtual = mark  # exact, against float drift
            limit._exit_ok(token, None)
            if measured:
                latency = t - arrived
                latencies.append(latency)
                good += latency <= svc.deadline
    span = duration - warmup
    latencies.sort()
    result.goodput = good / span
    result.p50 = latencies[len(latencies) // 2] if latencies else math.inf
    result.p99 = latencies[int(len(latencies) * 0.99)] if latencies else math.inf
    result.rejected = rejected / max(arrivals, 1)
    steady = result.limits[int(warmup / trace_step) :]
    result.settled = statistics.median(steady) if steady else math.nan
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--knee", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="simulated seconds")
    parser.add_argument("--warmup", type=float, default=20.0, help="simulated seconds not measured")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--window", type=float, default=0.25, help="adaptive window, seconds")
    args = parser.parse_args()
    svc = Service(knee=args.knee)
    run = {"duration": args.duration, "warmup": args.warmup, "seed": args.seed, "trace_step": 1.0}
    k = svc.knee
    capacity = k / svc.service
    print(
        f"service: knee K={k}, mean work {svc.service * 1e3:.0f} ms, "
        f"capacity {capacity:.0f}/s at the knee, thrash {svc.thrash}, "
        f"arrivals {svc.overload}x capacity (Poisson), deadline {svc.deadline}s"
    )
    print(
        f"run: {args.duration:.0f} s simulated, first {args.warmup:.0f} s not measured, "
        f"seed {args.seed}\n"
    )

    statics = sorted(
        {max(1, round(k * f)) for f in (0.5, 0.75, 0.875, 1.0, 1.125, 1.25, 1.5, 2.0, 3.0)}
    )
    results = [
        simulate(f"static {n}", lambda c, n=n: ConcurrencyLimit(n, max_wait=0, clock=c), svc, **run)
        for n in statics
    ]
    adaptive = simulate(
        "adaptive",
        # Defaults, except windows of 0.25 s (about 400 samples each) to fit a short simulation.
        lambda c: AdaptiveConcurrencyLimit(max_wait=0, window=args.window, clock=c),
        svc,
        **run,
    )

    print(
        f"{'limit':<12} {'goodput/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'rejected':>9} "
        f"{'limit (median)':>15}"
    )
    for r in [*results, adaptive]:
        print(
            f"{r.name:<12} {r.goodput:>10.0f} {r.p50 * 1e3:>8.1f} {r.p99 * 1e3:>8.1f} "
            f"{r.rejected:>9.1%} {r.settled:>15.1f}"
        )

    print("\nadaptive limit, once per simulated second:")
    trace = adaptive.limits
    for i in range(0, len(trace), 10):
        print(f"  t={i:>3}s  " + " ".join(f"{v:>4}" for v in trace[i : i + 10]))

    best = max(results, key=lambda r: (round(r.goodput), -r.p99))
    steady = sorted(trace[int(args.warmup) :])
    low, high = 0.75 * k, 1.25 * k
    inside = sum(low <= v <= high for v in steady) / len(steady)
    p5, p95 = steady[len(steady) // 20], steady[len(steady) * 19 // 20]
    bars = {
        f"settles within +-25% of K={k}: median {adaptive.settled:.0f}, p5..p95 {p5}..{p95}, "
        f"{inside:.0%} of the time in [{low:.0f}, {high:.0f}] "
        "(bar: median in, >= 90% of the time)": (low <= adaptive.settled <= high and inside >= 0.9),
        f"goodput {adaptive.goodput:.0f}/s >= 90% of the best static limit's "
        f"({best.name}: {best.goodput:.0f}/s), ratio {adaptive.goodput / best.goodput:.2f}": (
            adaptive.goodput >= 0.9 * best.goodput
        ),
        f"p99 {adaptive.p99 * 1e3:.1f} ms <= 1.5x the best static limit's "
        f"({best.p99 * 1e3:.1f} ms), "
        f"ratio {adaptive.p99 / best.p99:.2f}": adaptive.p99 <= 1.5 * best.p99,
    }
    print("\nsummary:")
    for bar, ok in bars.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {bar}")
    return 0 if all(bars.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
