"""`StatusEndpoint`: "is the app overloaded, and why?" as one JSON document.

A mountable ASGI app that reports every live breaker, concurrency limit, loop monitor and load
shedder in the process: states, limits in use, loop delay percentiles, recent stalls and shed
counts. Opt-in: it reveals internals, so mount it where only operators can reach it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from resilient._breaker import CircuitBreaker
from resilient._limit import LimitCore
from resilient._loop import LoopMonitor
from resilient.asgi._respond import respond
from resilient.asgi._shedding import LoadSheddingMiddleware
from resilient.metrics._sink import live_sources


if TYPE_CHECKING:
    from resilient.asgi._types import Receive, Scope, Send


__all__ = ["StatusEndpoint", "status_snapshot"]


def status_snapshot() -> dict[str, list[dict[str, Any]]]:
    """Return the state of every live breaker, limit, loop monitor and load shedder."""
    snapshot: dict[str, list[dict[str, Any]]] = {
        "circuit_breakers": [],
        "concurrency_limits": [],
        "event_loops": [],
        "load_shedding": [],
    }
    for source in sorted(live_sources(), key=lambda s: (type(s).__name__, s.name or "")):
        entry: dict[str, Any] = {"name": source.name, "type": type(source).__name__}
        if isinstance(source, CircuitBreaker):
            entry.update(_fields(source.statistics()))
            snapshot["circuit_breakers"].append(entry)
        elif isinstance(source, LimitCore):
            entry.update(_fields(source.statistics()))
            snapshot["concurrency_limits"].append(entry)
        elif isinstance(source, LoopMonitor):
            entry.update(running=source.running, **_fields(source.statistics()))
            entry["recent_stalls"] = [
                {
                    "kind": stall.kind,
                    "duration": stall.duration,
                    "where": (
                        f"{stall.culprit.name} ({stall.culprit.filename}:{stall.culprit.lineno})"
                        if stall.culprit
                        else None
                    ),
                }
                for stall in source.stalls()
            ]
            snapshot["event_loops"].append(entry)
        elif isinstance(source, LoadSheddingMiddleware):
            pressure, signal = source.pressure()
            entry.update(pressure=pressure, highest_signal=signal, shed=source.shed_counts())
            snapshot["load_shedding"].append(entry)
    return snapshot


def _fields(statistics: object) -> dict[str, Any]:
    if dataclasses.is_dataclass(statistics) and not isinstance(statistics, type):
        return dataclasses.asdict(statistics)
    return {"statistics": repr(statistics)}  # pragma: no cover - every statistics() is a dataclass


class StatusEndpoint:
    """An ASGI app answering `GET` with `status_snapshot()` as JSON (`HEAD` too; else 405).

    Mount it: `app.mount("/_status", StatusEndpoint())` in Starlette, or `status_path=` in
    `protect()`.
    """

    __slots__ = ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # served on its own: be a well-behaved app
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope.get("method", "GET") not in ("GET", "HEAD"):
            await respond(scope, send, 405)
            return
        body = json.dumps(status_snapshot(), default=str, indent=2).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def __repr__(self) -> str:
        return "StatusEndpoint()"
