"""Offload: does it keep the event loop responsive, and do processes beat threads on CPU work?

1. Loop delay while four 100 ms CPU-bound calls run: inline (on the loop) against offloaded to
   processes, measured by a LoopMonitor. Bar: under 10 ms offloaded (against 100 ms+ inline).
2. Throughput of CPU-bound calls offloaded to 2 threads against 2 processes (the GIL serializes
   the threads). Bar: processes reach at least 1.7x the threads' throughput on 2 cores.

Run: `python benchmarks/offload.py` (not pinned: the processes need both cores).
"""

from __future__ import annotations

import statistics
import sys
import time

import anyio

from resilient import LoopMonitor, offload


def burn(seconds: float) -> int:
    """Pure-Python CPU work for about *seconds*."""
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        n += sum(range(100))
    return n


def spin(count: int) -> int:
    """A fixed amount of pure-Python CPU work."""
    total = 0
    for i in range(count):
        total += i * i % 7
    return total


burn_in_process = offload(kind="process", max_concurrent=4)(burn)
spin_in_threads = offload(kind="thread", max_concurrent=2)(spin)
spin_in_processes = offload(kind="process", max_concurrent=2)(spin)
SPIN = 2_000_000  # about 100 ms on the project machine


async def loop_delay(offloaded: bool) -> float:
    async with LoopMonitor(interval=0.005, stall_threshold=10) as monitor:
        await anyio.sleep(0.05)
        if offloaded:
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(burn_in_process, 0.1)
        else:
            for _ in range(4):
                burn(0.1)
        await anyio.sleep(0.05)
        return monitor.statistics().max


async def throughput(fn: object, calls: int = 32) -> float:
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(calls):
            tg.start_soon(fn, SPIN)  # type: ignore[arg-type]
    return calls / (time.perf_counter() - started)


async def main() -> int:
    # Warm the process pool, so worker start-up is not measured.
    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(burn_in_process, 0.01)
    await spin_in_processes(10)

    inline = statistics.median([await loop_delay(offloaded=False) for _ in range(3)])
    offloaded = statistics.median([await loop_delay(offloaded=True) for _ in range(3)])
    print("loop delay while four 100 ms CPU-bound calls run (median of 3):")
    print(f"  inline on the loop:       {inline * 1000:7.1f} ms")
    print(f"  offloaded to processes:   {offloaded * 1000:7.2f} ms (bar < 10 ms)")

    threads, processes = [], []
    for _ in range(5):
        threads.append(await throughput(spin_in_threads))
        processes.append(await throughput(spin_in_processes))
    t, p = statistics.median(threads), statistics.median(processes)
    print("CPU-bound throughput, 32 calls of ~100 ms, 2 workers (median of 5):")
    print(f"  threads:   {t:6.2f} calls/s")
    print(f"  processes: {p:6.2f} calls/s  ratio {p / t:.2f}x (bar >= 1.7x)")
    ok = offloaded < 0.010 and p / t >= 1.7
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(anyio.run(main))
