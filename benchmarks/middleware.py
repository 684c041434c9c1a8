"""In-process cost per request of each ASGI middleware and of protect()'s full stack.

Each case drives an ASGI app directly (no server, no sockets) with a GET request whose body is
empty, and a trivial app that answers 200; the bare app is the baseline. Bar: the full
`protect()` stack adds at most 15 us per request.

Run: `taskset -c 1 python benchmarks/middleware.py`
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).parent))

from _timing import async_runner, measure, report

from resilient import AdaptiveConcurrencyLimit, CircuitBreaker, ConcurrencyLimit, LoopMonitor
from resilient.asgi import (
    BodySizeLimitMiddleware,
    CircuitBreakerMiddleware,
    ConcurrencyLimitMiddleware,
    LoadSheddingMiddleware,
    protect,
)


SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/items/42",
    "raw_path": b"/items/42",
    "query_string": b"",
    "headers": [(b"host", b"example.com"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
}
REQUEST = {"type": "http.request", "body": b"", "more_body": False}
START = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
BODY = {"type": "http.response.body", "body": b"ok"}


async def receive() -> dict[str, Any]:
    return REQUEST


async def send(message: dict[str, Any]) -> None:
    pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send(START)
    await send(BODY)


def runner(asgi: Any) -> Any:
    async def one(_: int) -> None:
        await asgi(dict(SCOPE), receive, send)  # servers build a fresh scope per request

    return async_runner(one)


class IdleMonitor(LoopMonitor):
    """A monitor that reads as running and idle, without a watchdog thread.

    A micro-benchmark keeps the loop busy on purpose: a real monitor would see that delay and
    the shedder would start shedding, so the shed path would be measured instead of the pass
    path. Reading the delay costs the same either way.
    """

    __slots__ = ()

    @property
    def running(self) -> bool:
        return True


def full_limit() -> ConcurrencyLimit:
    """A limit whose one permit is taken for good: every request through it is rejected."""
    limit = ConcurrencyLimit(1, max_wait=0)
    limit.__enter__()  # from no event loop: takes the permit and keeps it
    return limit


def main() -> int:
    monitor = IdleMonitor()
    cases = {
        "bare app": runner(app),
        "BodySizeLimitMiddleware": runner(BodySizeLimitMiddleware(app)),
        "ConcurrencyLimitMiddleware (static)": runner(
            ConcurrencyLimitMiddleware(app, limit=ConcurrencyLimit(100))
        ),
        "ConcurrencyLimitMiddleware (adaptive)": runner(
            ConcurrencyLimitMiddleware(app, limit=AdaptiveConcurrencyLimit())
        ),
        "CircuitBreakerMiddleware": runner(CircuitBreakerMiddleware(app, breaker=CircuitBreaker())),
        "LoadSheddingMiddleware (loop delay)": runner(LoadSheddingMiddleware(app, monitor=monitor)),
        "protect(app), full stack": runner(protect(app, monitor=monitor)),
        # Under overload most requests are turned away: this is the cheapest way (a static
        # limit, no wait); protect()'s adaptive limit may first let a request wait for a permit.
        "protect(app), rejected by its limit (503)": runner(
            protect(app, monitor=monitor, limit=full_limit())
        ),
    }
    results = measure(cases, repeats=7, target=0.1)
    report("per request, in-process (asyncio)", results, "bare app")
    full = results["protect(app), full stack"] - results["bare app"]
    passed = full <= 15_000
    print(f"\nfull stack adds {full / 1000:.1f} us per request (bar <= 15 us): "
          f"{'PASS' if passed else 'FAIL'}")  # fmt: skip
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
