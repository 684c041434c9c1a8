"""A concurrency cap protecting a slow async dependency from a burst.

Run: `python examples/concurrency_demo.py` (about two seconds, on asyncio; `--trio` for trio).

A "database" that does well up to 4 queries at once gets a burst of 120 requests in 0.6 s.
Without a cap every request piles onto it and all of them get slow; with `ConcurrencyLimit(4,
max_waiting=8, max_wait=0.25)` at most 4 run, 8 more wait briefly (first come, first served),
and the rest are told at once to come back later (`ConcurrencyLimitError.retry_after`), which is
what a server turns into `503 Service Unavailable` with `Retry-After`.
"""

from __future__ import annotations

import statistics
import sys
import time

import anyio

from resilient import ConcurrencyLimit, ConcurrencyLimitError


CAPACITY = 4  # the database's sweet spot
QUERY = 0.05  # seconds per query when it is not overloaded


class Database:
    """Slows down for everyone once more than CAPACITY queries run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0

    async def query(self) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await anyio.sleep(QUERY * max(1.0, self.running / CAPACITY))
        finally:
            self.running -= 1


async def burst(name: str, call: object, n: int = 120) -> None:
    latencies: list[float] = []
    rejected: list[float | None] = []

    async def one() -> None:
        start = time.perf_counter()
        try:
            await call()  # type: ignore[operator]
        except ConcurrencyLimitError as exc:
            rejected.append(exc.retry_after)
        else:
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(n):  # 200 requests a second: two and a half times what the database does
            tg.start_soon(one)
            await anyio.sleep(0.005)
    took = time.perf_counter() - start
    p50 = statistics.median(latencies) * 1e3
    worst = max(latencies) * 1e3
    print(f"{name}: {len(latencies)} served (median {p50:.0f} ms, worst {worst:.0f} ms), ", end="")
    hint = f" (last: retry after {rejected[-1]:.2f} s)" if rejected and rejected[-1] else ""
    print(f"{len(rejected)} rejected at once{hint}; burst over in {took:.2f} s")


async def main() -> None:
    db = Database()
    await burst("no cap      ", db.query)
    print(f"  database peak concurrency: {db.peak}\n")

    db = Database()
    limit = ConcurrencyLimit(CAPACITY, max_waiting=8, max_wait=0.25, name="db")

    @limit
    async def capped_query() -> None:
        await db.query()

    await burst("with a cap  ", capped_query)
    print(f"  database peak concurrency: {db.peak}")
    print(f"  {limit.statistics()}")


if __name__ == "__main__":
    anyio.run(main, backend="trio" if "--trio" in sys.argv else "asyncio")
