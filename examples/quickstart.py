"""A tour of what resilient does today, as one program: the README's main-job command.

1. A circuit breaker guards a flaky upstream: it opens after failures, rejects fast while open,
   probes after a jittered backoff, and closes when the upstream recovers.
2. A concurrency limit caps a slow dependency under a burst: a few wait, the rest are rejected fast.
3. The event-loop monitor catches a handler that blocks the loop and names its line.
4. offload moves that CPU-bound work to worker processes, and the loop stays responsive.

Metrics from all of it land in one in-memory sink. Run: `python examples/quickstart.py` (~3 s).
"""

from __future__ import annotations

import logging
import time

import anyio

from resilient import (
    Backoff,
    CircuitBreaker,
    CircuitOpenError,
    ConcurrencyLimit,
    ConcurrencyLimitError,
    ConsecutiveFailures,
    LoopMonitor,
    offload,
)
from resilient.metrics import CIRCUIT_BREAKER_CALLS, CIRCUIT_BREAKER_TRANSITIONS
from resilient.testing import capture_metrics


# --- 1. a circuit breaker around a flaky upstream ---------------------------------------------

upstream_healthy = True

breaker = CircuitBreaker(
    "payments",
    trip=ConsecutiveFailures(3),
    backoff=Backoff(initial=0.2, multiplier=2, maximum=2, jitter=0.1),
)


@breaker
async def charge(order: int) -> str:
    await anyio.sleep(0.001)  # the network
    if not upstream_healthy:
        msg = "upstream 503"
        raise ConnectionError(msg)
    return f"charged order {order}"


async def breaker_demo() -> None:
    global upstream_healthy  # noqa: PLW0603 - the demo flips the upstream's health
    print("1. circuit breaker")
    upstream_healthy = False
    outcomes: list[str] = []
    for order in range(8):
        try:
            await charge(order)
            outcomes.append("ok")
        except ConnectionError:
            outcomes.append("failed")
        except CircuitOpenError as exc:
            outcomes.append(f"rejected (retry in {exc.retry_after:.2f}s)")
    print("   upstream down: ", ", ".join(outcomes[:4]), "...")
    print("   state:", breaker.state)
    upstream_healthy = True
    await anyio.sleep(0.25)  # the backoff elapses
    print("   upstream back: ", await charge(99), "-> state:", breaker.state)


# --- 2. a concurrency limit under a burst ------------------------------------------------------

db = ConcurrencyLimit(4, max_waiting=4, max_wait=0.05, name="db")


@db
async def query(n: int) -> int:
    await anyio.sleep(0.02)  # a slow dependency
    return n


async def limit_demo() -> None:
    print("2. concurrency limit")
    served = rejected = 0

    async def one(n: int) -> None:
        nonlocal served, rejected
        try:
            await query(n)
            served += 1
        except ConcurrencyLimitError:
            rejected += 1

    async with anyio.create_task_group() as tg:
        for n in range(40):
            tg.start_soon(one, n)
    stats = db.statistics()
    print(
        f"   burst of 40: {served} served, {rejected} rejected fast; "
        f"peak {stats.max_active} at once"
    )


# --- 3 and 4. a handler that blocks the loop, then the same work offloaded ---------------------


def render_invoice(order: int) -> int:
    """CPU-bound work, about 300 ms of pure Python."""
    deadline = time.perf_counter() + 0.3
    total = order
    while time.perf_counter() < deadline:
        total = (total + sum(range(200))) % 1_000_003
    return total


render_offloaded = offload(kind="process", max_concurrent=2, timeout=10)(render_invoice)


async def loop_demo() -> None:
    print("3. event-loop monitor")
    async with LoopMonitor(stall_threshold=0.1) as monitor:
        await anyio.sleep(0.05)
        render_invoice(1)  # blocks the loop
        await anyio.sleep(0.05)
    [stall] = monitor.stalls()
    culprit = stall.culprit
    assert culprit is not None
    print(f"   stall: loop {stall.kind} {(stall.duration or 0) * 1000:.0f} ms")
    print(f"   in {culprit.name}, line {culprit.lineno}: {culprit.line}")

    print("4. offload")
    await render_offloaded(0)  # start the workers
    async with LoopMonitor(stall_threshold=0.1) as monitor, anyio.create_task_group() as tg:
        for order in range(4):
            tg.start_soon(render_offloaded, order)
    print(
        f"   4 renders in worker processes; loop delay max {monitor.statistics().max * 1000:.1f} ms"
    )


async def main() -> None:
    with capture_metrics() as sink:
        await breaker_demo()
        await limit_demo()
        await loop_demo()
        # Pushed events are stored in the sink; per-call counts are pulled from the policies.
        print("metrics:")
        print(f"   breaker transitions: {sink.total(CIRCUIT_BREAKER_TRANSITIONS):.0f}")
        for outcome in ("success", "failure", "rejected"):
            calls = sink.total(CIRCUIT_BREAKER_CALLS, {"outcome": outcome})
            print(f"   breaker calls, {outcome}: {calls:.0f}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)  # the stall warning is printed above, not logged
    anyio.run(main)
