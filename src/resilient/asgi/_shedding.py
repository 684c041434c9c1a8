"""`LoadSheddingMiddleware`: answer 503 at once while the process is overloaded, by any signal.

Each signal is a *pressure*: 0 when healthy, 1 when everything should be shed, and in between a
probability (toobusy's curve, not a cliff: shedding a share of requests is gentler and steadier
than all or nothing). The built-in signal is the event loop's delay from a `LoopMonitor`, which is
measured from outside the loop, so a loop that is blocked right now already counts. A request is
shed with the highest pressure of all signals, lowered by its priority.

New websocket connections are shed the same way (an overloaded server should not take on long-lived
connections): the handshake is refused with a 503 where the server supports the WebSocket Denial
Response extension, else with close code 1013 (Try Again Later), which a server sends as a 403.
A connection once accepted is never touched.

The middleware also runs its monitor: started when the server sends `lifespan.startup` (or on the
first request, for servers run without lifespan), stopped on `lifespan.shutdown`.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from resilient._loop import LoopMonitor
from resilient._validate import in_range
from resilient.asgi._policy import REJECTED, Exempting, body_unread, exempt_paths, is_exempt
from resilient.asgi._respond import deny_websocket, respond
from resilient.metrics._catalog import LOAD_SHEDDING_SHED
from resilient.metrics._sink import Instrumented, Measurement


if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from resilient.asgi._types import ASGIApp, Message, Receive, Scope, Send
    from resilient.metrics._sink import MetricsSink


__all__ = ["LoadSheddingMiddleware", "delay_pressure"]

LOOP_DELAY = "event_loop.delay"


def delay_pressure(monitor: LoopMonitor, low: float, high: float) -> Callable[[], float]:
    """A signal: 0 below *low* seconds of loop delay, rising linearly to 1 at *high*."""
    span = high - low

    def pressure() -> float:
        return (monitor.current_delay - low) / span

    return pressure


class LoadSheddingMiddleware(Instrumented, Exempting):
    """Shed requests (503 + `Retry-After`) in proportion to how overloaded the process is.

    HTTP requests and new websocket connections are shed alike, by the same signals, priority and
    exempt paths, and counted together. A shed websocket handshake gets the 503 (with
    `Retry-After`) if the server supports the `websocket.http.response` extension, else a
    `websocket.close` with code 1013 before accept (a 403 on the wire). An admitted connection is
    never touched again: its messages pass straight through, whatever the pressure later.

    Args:
        app: the ASGI app to protect.
        monitor: the `LoopMonitor` whose delay is a signal (default: a new one, which this
            middleware starts and stops). Pass `None` with `delay_low=None` to use only `signals`.
        delay_low: loop delay (seconds) at which shedding starts (default 0.05).
        delay_high: loop delay at which every request is shed (default 0.25).
        signals: more signals by name: callables returning a pressure (0 healthy, 1 shed all;
            values outside are clamped). Called on every request: keep them cheap.
        priority: a callable taking the scope and returning the request's priority in [0, 1]:
            a request of priority p is shed only above pressure p, and never at 1 (default: every
            request has priority 0).
        exempt: path prefixes never shed (health checks).
        retry_after: the `Retry-After` hint in seconds (default 1; a jitter of up to one second
            is added so that shed clients do not come back in step).
        rng: randomness for the shedding draw: a `random.Random` or a seed.
        name: names the middleware in metrics.
        sink: metrics sink (default: the process-wide default).
    """

    __slots__ = (
        "_exempt",
        "_owns_monitor",
        "_random",
        "_shed",
        "_signals",
        "app",
        "monitor",
        "priority",
        "retry_after",
    )

    def __init__(
        self,
        app: ASGIApp,
        /,
        *,
        monitor: LoopMonitor | None = None,
        delay_low: float | None = 0.05,
        delay_high: float = 0.25,
        signals: Mapping[str, Callable[[], float]] | None = None,
        priority: Callable[[Scope], float] | None = None,
        exempt: Iterable[str] = (),
        retry_after: float = 1.0,
        rng: random.Random | int | None = None,
        name: str | None = None,
        sink: MetricsSink | None = None,
    ) -> None:
        super().__init__(name, sink)
        self.app = app
        self._signals: list[tuple[str, Callable[[], float]]] = []
        self._owns_monitor = False
        if delay_low is not None:
            _check_delays(delay_low, delay_high)
            if monitor is None:
                monitor, self._owns_monitor = LoopMonitor(name=name, sink=sink), True
            self._signals.append((LOOP_DELAY, delay_pressure(monitor, delay_low, delay_high)))
        elif monitor is not None and not isinstance(monitor, LoopMonitor):
            msg = f"monitor must be a LoopMonitor or None, got {monitor!r}"
            raise TypeError(msg)
        self.monitor = monitor
        for signal, read in (signals or {}).items():
            if not isinstance(signal, str) or not callable(read):
                msg = f"signals must map names to callables, got {signal!r}: {read!r}"
                raise TypeError(msg)
            self._signals.append((signal, read))
        if priority is not None and not callable(priority):
            msg = f"priority must be a callable taking the scope, got {priority!r}"
            raise TypeError(msg)
        self.priority = priority
        self._exempt = exempt_paths(exempt)
        self.retry_after = in_range("retry_after", retry_after, 0.0)
        self._random = rng if isinstance(rng, random.Random) else random.Random(rng)  # noqa: S311
        self._shed = {signal: 0 for signal, _ in self._signals}

    def pressure(self) -> tuple[float, str | None]:
        """Return the highest pressure now (clamped to [0, 1]) and the signal it comes from."""
        highest, source = 0.0, None
        for signal, read in self._signals:
            value = read()
            if value > highest:
                highest, source = value, signal
        return min(highest, 1.0), source

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, self._lifespan(receive), send)
            return
        monitor = self.monitor
        if monitor is not None and not monitor.running:
            monitor.start()  # no lifespan (or a new event loop): start on the first request
        if kind not in ("http", "websocket") or is_exempt(scope, self._exempt):
            await self.app(scope, receive, send)
            return
        pressure, signal = self.pressure()
        if signal is not None and self._draw(scope) < pressure:
            self._shed[signal] += 1  # racy across threads: a counter, never a decision
            scope[REJECTED] = self.name or "load_shedding"
            retry_after = self.retry_after + self._random.random()
            if kind == "websocket":
                await deny_websocket(scope, receive, send, 503, retry_after=retry_after)
            else:
                await respond(scope, send, 503, retry_after=retry_after, close=body_unread(scope))
            return
        await self.app(scope, receive, send)

    def _draw(self, scope: Scope) -> float:
        """A uniform draw, moved up by the request's priority: p sheds only above pressure p."""
        draw = self._random.random()
        if self.priority is None:
            return draw
        priority = min(max(self.priority(scope), 0.0), 1.0)
        return priority + draw * (1.0 - priority) if priority < 1.0 else 2.0

    def _lifespan(self, receive: Receive) -> Receive:
        monitor = self.monitor if self._owns_monitor else None

        async def watching() -> Message:
            message = await receive()
            if monitor is not None:
                if message["type"] == "lifespan.startup":
                    monitor.start()
                elif message["type"] == "lifespan.shutdown":
                    monitor.stop()
            return message

        return watching

    def shed_counts(self) -> dict[str, int]:
        """Requests (and websocket handshakes) shed so far, by the signal that was highest."""
        return dict(self._shed)

    def _observe(self) -> Iterable[Measurement]:
        return [
            Measurement(LOAD_SHEDDING_SHED, count, {"signal": signal})
            for signal, count in self._shed.items()
        ]

    def __repr__(self) -> str:
        names = ", ".join(signal for signal, _ in self._signals)
        return f"LoadSheddingMiddleware(signals=[{names}])"


def _check_delays(low: float, high: float) -> None:
    in_range("delay_low", low, 0.0)
    in_range("delay_high", high, low, open_low=True)
