"""CPU cost of *waiting* for a permit: what every queued request pays under overload.

Run: `taskset -c 1 .venv/bin/python benchmarks/limit_wait.py` (about 10 s).

One permit is held for the whole run; each of N callers in turn queues for it and gives up after
`max_wait` (1 ms): the whole slow path (queue, timer, wake-up, time-out, bookkeeping). Cases: our
`ConcurrencyLimit` on asyncio (a bare future and a loop timer) and on trio (anyio's `Event` and
cancel scope), against the usual asyncio idiom, `asyncio.wait_for(semaphore.acquire(), ...)`.
The table shows CPU microseconds per wait (process time, so the 1 ms of waiting is not counted),
the median of 5 runs. Before
the asyncio path used a bare future it was the anyio path on every backend.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import anyio
import trio
import uvloop

from resilient import ConcurrencyLimit, ConcurrencyLimitError


N = 2000
WAIT = 0.001


async def _ours() -> float:
    limit = ConcurrencyLimit(1, max_wait=WAIT)
    async with limit:  # the permit nobody gets
        start = time.process_time()
        for _ in range(N):
            try:
                async with limit:
                    pass
            except ConcurrencyLimitError:  # noqa: PERF203 - the case being measured
                pass
        return (time.process_time() - start) / N


async def _semaphore() -> float:
    semaphore = asyncio.Semaphore(1)
    await semaphore.acquire()
    start = time.process_time()
    for _ in range(N):
        try:
            await asyncio.wait_for(semaphore.acquire(), WAIT)
        except TimeoutError:  # noqa: PERF203 - the case being measured
            pass
        else:  # pragma: no cover - the permit is never free
            semaphore.release()
    return (time.process_time() - start) / N


def main() -> None:
    cases = {
        "ConcurrencyLimit, asyncio": lambda: asyncio.run(_ours()),
        "ConcurrencyLimit, trio": lambda: trio.run(_ours),
        "ConcurrencyLimit, asyncio through anyio.run": lambda: anyio.run(_ours),
        "ConcurrencyLimit, uvloop": lambda: uvloop.run(_ours()),
        "asyncio.wait_for(Semaphore.acquire())": lambda: asyncio.run(_semaphore()),
        "asyncio.wait_for(Semaphore.acquire()), uvloop": lambda: uvloop.run(_semaphore()),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(5):
        for name, run in cases.items():
            results[name].append(run())
    print(f"CPU per queued wait that times out after {WAIT * 1000:g} ms ({N} waits, median of 5)")
    for name, values in results.items():
        print(f"  {name:45s} {statistics.median(values) * 1e6:6.1f} us")


if __name__ == "__main__":
    main()
