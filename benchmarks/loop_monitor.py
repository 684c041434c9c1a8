"""What the LoopMonitor costs at its default interval: CPU on an idle loop, throughput when busy.

- idle: a loop that only sleeps, with and without a monitor; process CPU time (all threads) per
  second of wall time. Bar: the monitor adds at most 1% of one core.
- busy: many tasks doing small steps of work and yielding, for a fixed time, with and without a
  monitor; steps per second. Bar: at most 2% fewer with the monitor.

Runs alternate (without, with, without, ...) and the medians are compared, on asyncio and trio.

Run: `taskset -c 1 python benchmarks/loop_monitor.py`
"""

from __future__ import annotations

import statistics
import sys
import time

import anyio
import anyio.lowlevel

from resilient import LoopMonitor


IDLE_SECONDS = 2.0
BUSY_SECONDS = 1.0
REPEATS = 5


async def idle(monitored: bool) -> float:
    """Return CPU seconds per wall second while the loop sleeps."""
    monitor = LoopMonitor() if monitored else None
    if monitor:
        monitor.start()
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        await anyio.sleep(IDLE_SECONDS)
        return (time.process_time() - cpu) / (time.perf_counter() - wall)
    finally:
        if monitor:
            monitor.stop()


async def busy(monitored: bool) -> float:
    """Return work steps per second with 50 tasks that each compute a little, then yield."""
    monitor = LoopMonitor() if monitored else None
    if monitor:
        monitor.start()
    steps = 0
    deadline = time.perf_counter() + BUSY_SECONDS

    async def worker() -> None:
        nonlocal steps
        while time.perf_counter() < deadline:
            sum(range(200))  # a few microseconds of CPU
            steps += 1
            await anyio.lowlevel.checkpoint()

    try:
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(worker)
        return steps / (time.perf_counter() - start)
    finally:
        if monitor:
            monitor.stop()


def run(backend: str) -> bool:
    idle_cpu = {False: [], True: []}  # type: dict[bool, list[float]]
    busy_rate = {False: [], True: []}  # type: dict[bool, list[float]]
    for i in range(REPEATS):
        for monitored in (False, True) if i % 2 == 0 else (True, False):
            idle_cpu[monitored].append(anyio.run(idle, monitored, backend=backend))
            busy_rate[monitored].append(anyio.run(busy, monitored, backend=backend))
    cpu_off, cpu_on = (statistics.median(idle_cpu[m]) for m in (False, True))
    rate_off, rate_on = (statistics.median(busy_rate[m]) for m in (False, True))
    added_cpu = (cpu_on - cpu_off) * 100
    loss = (1 - rate_on / rate_off) * 100
    print(f"\n{backend}: default interval {LoopMonitor().interval * 1000:.0f} ms")
    print(f"  idle loop CPU: {cpu_off * 100:.2f}% without, {cpu_on * 100:.2f}% with a monitor")
    print(f"    added: {added_cpu:.2f}% of one core (bar <= 1%)")
    print(f"  busy loop: {rate_off:,.0f} steps/s without, {rate_on:,.0f} with a monitor")
    print(f"    throughput lost: {loss:.2f}% (bar <= 2%)")
    return added_cpu <= 1.0 and loss <= 2.0


def main() -> int:
    results = [run(backend) for backend in ("asyncio", "trio")]
    print("\nPASS" if all(results) else "\nFAIL")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
