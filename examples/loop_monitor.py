"""A handler blocks the event loop with time.sleep(0.2); the monitor names its file and line.

Run: `python examples/loop_monitor.py` (about one second, on asyncio and then on trio).
"""

from __future__ import annotations

import logging
import time

import anyio
import anyio.lowlevel

from resilient import LoopMonitor


def resize_image() -> None:
    time.sleep(0.2)  # blocking call inside async code: the bug the monitor finds


async def handler() -> None:
    await anyio.lowlevel.checkpoint()
    resize_image()


async def main() -> None:
    async with LoopMonitor(stall_threshold=0.1) as monitor:
        await anyio.sleep(0.1)
        await handler()
        await anyio.sleep(0.1)
    stats = monitor.statistics()
    print(f"loop delay: p50 {stats.p50 * 1000:.1f} ms, max {stats.max * 1000:.0f} ms")
    for stall in monitor.stalls():
        culprit = stall.culprit
        assert culprit is not None
        print(f"stall: {stall.kind} for {(stall.duration or 0) * 1000:.0f} ms in {culprit.name}")
        print(f"       at {culprit.filename}:{culprit.lineno}: {culprit.line}")


if __name__ == "__main__":
    # The monitor also logs each stall, with the loop thread's stack, to "resilient.loop".
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for backend in ("asyncio", "trio"):
        print(f"--- {backend}")
        anyio.run(main, backend=backend)
