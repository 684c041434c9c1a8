"""`protect(app)`: the recommended stack, in the right order, with defaults that hold untuned.

Outermost first, so that each layer rejects before the next does any work:

1. `BodySizeLimitMiddleware`: refuse oversized, lying, stalling and trickling bodies.
2. `LoadSheddingMiddleware`: shed in proportion to the event loop's delay, measured from outside
   the loop, so CPU overload is caught even when no single limit is wrong.
3. `ConcurrencyLimitMiddleware` over an `AdaptiveConcurrencyLimit`: find the concurrency the app
   sustains by itself (the knee), and turn the rest away quickly instead of queueing it. It starts
   at 100, enough for an I/O-bound app that needs a hundred requests in flight not to shed a
   cold start, and keeps slow start (doubling while it is full and latency stays flat, but not
   while it counts as overloaded: the first window of a step far over capacity does not show
   what the step does, and a doubling there overran the app). A
   CPU-bound app with a knee of 8 never fills 100 permits: its calls queue for the CPU instead,
   and the first window whose latency shows that queue cuts the limit to the knee at once
   (Little's law), so it is not overrun. `tolerance=1.3` accepts the loop's own delay near
   capacity as no queue. Its wait queue (75 ms at most) absorbs what comes at or a little over
   capacity; once a fifth of the requests are turned away or left queued, the limit counts as
   overloaded (`order="adaptive"`): newest waiter first from a queue cut to a tenth of the
   limit, and `overload_tolerance=1.15`, so that the requests it serves stay fast and the rest
   are turned away at once.

Health-check paths are exempt from shedding and from the limit.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from resilient._adaptive import AdaptiveConcurrencyLimit
from resilient.asgi._body_size import BodySizeLimitMiddleware
from resilient.asgi._concurrency import ConcurrencyLimitMiddleware
from resilient.asgi._shedding import LoadSheddingMiddleware
from resilient.asgi._status import StatusEndpoint


if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from resilient._concurrency import ConcurrencyLimit
    from resilient._loop import LoopMonitor
    from resilient.asgi._types import ASGIApp, Receive, Scope, Send
    from resilient.metrics._sink import MetricsSink


__all__ = ["DEFAULT_EXEMPT", "protect"]

DEFAULT_EXEMPT = ("/health", "/healthz", "/livez", "/readyz")
"""Paths that `protect()` never sheds or limits: the probes that decide whether to restart you."""

LIMIT_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "initial_limit": 100,
        "min_limit": 2,
        "max_wait": 0.075,
        "order": "adaptive",
        "overload_tolerance": 1.15,
        "window": 0.25,
        "tolerance": 1.3,
        "slow_start": True,
    }
)
"""The options of the `AdaptiveConcurrencyLimit` that `protect()` makes when given no `limit`."""


def protect(
    app: ASGIApp,
    /,
    *,
    max_body_size: int | None = 1_048_576,
    limit: ConcurrencyLimit | AdaptiveConcurrencyLimit | None = None,
    monitor: LoopMonitor | None = None,
    delay_low: float = 0.05,
    delay_high: float = 0.25,
    exempt: Iterable[str] = DEFAULT_EXEMPT,
    status_path: str | None = None,
    name: str = "protect",
    sink: MetricsSink | None = None,
) -> ASGIApp:
    """Wrap *app* in resilient's recommended middleware stack.

    Args:
        app: the ASGI app.
        max_body_size: request body limit in bytes (default 1 MiB; `None`: time limits only).
        limit: the concurrency limit (default: an `AdaptiveConcurrencyLimit` with the options
            in `LIMIT_DEFAULTS`: it starts at 100 in slow start, never goes below 2, uses 0.25 s
            windows and `tolerance=1.3`, and lets a request wait at most 75 ms for a permit;
            while overloaded, it serves the newest waiter first from a queue cut to a tenth of
            the limit, and aims at `overload_tolerance=1.15`).
        monitor: the event-loop monitor behind shedding (default: a new one, started with the
            server's lifespan or on the first request).
        delay_low: loop delay (s) at which shedding starts (default 0.05).
        delay_high: loop delay at which everything is shed (default 0.25).
        exempt: paths never shed nor limited (default: common health-check paths).
        status_path: if given, serve `StatusEndpoint` there (before any other layer).
        name: the name of the stack's policies in metrics.
        sink: metrics sink for the stack (default: the process-wide default).

    Returns:
        An ASGI app to serve instead of *app*.
    """
    exempt = tuple(exempt)
    if limit is None:
        limit = AdaptiveConcurrencyLimit(**LIMIT_DEFAULTS, name=name, sink=sink)
    stacked: ASGIApp = ConcurrencyLimitMiddleware(app, limit=limit, exempt=exempt)
    stacked = LoadSheddingMiddleware(
        stacked,
        monitor=monitor,
        delay_low=delay_low,
        delay_high=delay_high,
        exempt=exempt,
        name=name,
        sink=sink,
    )
    stacked = BodySizeLimitMiddleware(stacked, max_body_size=max_body_size, sink=sink)
    if status_path is not None:
        stacked = _Route(stacked, status_path, StatusEndpoint())
    return stacked


class _Route:
    """Send one exact path to another app, everything else to the stack."""

    __slots__ = ("app", "path", "target")

    def __init__(self, app: ASGIApp, path: str, target: ASGIApp) -> None:
        if not isinstance(path, str) or not path.startswith("/"):
            msg = f"status_path must be a path starting with '/', got {path!r}"
            raise ValueError(msg)
        self.app, self.path, self.target = app, path, target

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == self.path:
            await self.target(scope, receive, send)
        else:
            await self.app(scope, receive, send)
