"""A CPU-bound route offloaded to worker processes keeps the event loop responsive.

The "route" renders a thumbnail (here: pure-Python CPU work of about 50 ms). Run inline, each
request blocks the loop and the LoopMonitor names `render_thumbnail`; offloaded with
`@offload(kind="process")`, the loop stays free while the workers compute.

Run: `python examples/offload_cpu.py` (a few seconds).
"""

from __future__ import annotations

import time

import anyio

from resilient import LoopMonitor, offload


def render_thumbnail(size: int) -> int:
    """CPU-bound work: about 50 ms of pure Python."""
    deadline = time.perf_counter() + 0.05
    checksum = 0
    while time.perf_counter() < deadline:
        checksum = (checksum + sum(range(size))) % 1_000_003
    return checksum


# The same function, offloaded: at most 2 worker processes, 100 callers may wait, 5 s per call.
render_offloaded = offload(kind="process", max_concurrent=2, max_waiting=100, timeout=5)(
    render_thumbnail
)


async def serve(requests: int, *, offloaded: bool) -> None:
    async with LoopMonitor(interval=0.005, stall_threshold=0.04) as monitor:

        async def route(n: int) -> None:
            if offloaded:
                await render_offloaded(100 + n)
            else:
                render_thumbnail(100 + n)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for n in range(requests):
                tg.start_soon(route, n)
        took = time.perf_counter() - started
    stats = monitor.statistics()
    mode = "offloaded" if offloaded else "inline   "
    print(
        f"{mode}: {requests} requests in {took:.2f} s, "
        f"loop delay p99 {stats.p99 * 1000:6.1f} ms, max {stats.max * 1000:6.1f} ms, "
        f"stalls {stats.stalls}"
    )
    for stall in monitor.stalls()[:1]:
        culprit = stall.culprit
        if culprit is not None:
            print(f"           the monitor names {culprit.name} at line {culprit.lineno}")


async def main() -> None:
    await render_offloaded(1)  # start the worker processes before measuring
    await serve(12, offloaded=False)
    await serve(12, offloaded=True)


if __name__ == "__main__":
    anyio.run(main)
