"""A small HTTP/1.1 load generator for the overload demo: open-loop and closed-loop, one process.

Why not httpx: at a few thousand requests a second a general-purpose client spends more CPU per
request than the server under test, and the generator, not the server, becomes the bottleneck.
This one writes one pre-built `GET` per request on raw asyncio transports (uvloop when the caller
runs one) and parses only what it needs: the status line, `content-length` and `connection:
close`. No task and no timer per request: a response is handled in `data_received`, and one
sweeper enforces every deadline.

Open loop (`run_open`): arrivals on a fixed schedule at a target rate. Each request's latency is
measured from its *scheduled* time, not from when it was sent, so a server (or a generator) that
falls behind cannot hide its delay (coordinated omission). A request goes to an idle keep-alive
connection when there is one; otherwise a new connection is opened, up to `max_connections`; when
every connection is busy the request is *dropped*. A request without an answer `timeout` seconds
after its scheduled time is a *timeout*, and its connection is aborted, as a real client would.
`warm(n)` opens connections ahead of a schedule, as a client with a connection pool (a proxy, a
service mesh) comes to a load step with connections already open.

Closed loop (`run_closed`): N connections, each sending its next request as soon as the previous
answer arrives; used to find the server's capacity.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import heapq
import itertools
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from typing_extensions import Self


__all__ = ["DROPPED", "ERROR", "TIMEOUT", "LoadGenerator", "Record", "percentile"]

TIMEOUT = 0
"""`Record.status` of a request not answered within the client timeout."""
DROPPED = -1
"""`Record.status` of a request that found every allowed connection busy."""
ERROR = -2
"""`Record.status` of a request whose connection failed or closed before the answer."""

_IDLE_MAX = 3.0  # uvicorn closes keep-alive connections idle for 5 s: never reuse one that old
_SWEEP_EVERY = 0.01  # how late a timeout may be noticed; cheap, the sweep is O(expired)
_MAX_LIFETIME = 900.0  # the sweeper is cancelled on exit; this only bounds it if that never comes

perf_counter = time.perf_counter


@dataclass(slots=True)
class Record:
    """The outcome of one request.

    Attributes:
        sched: scheduled send time (`time.perf_counter()` seconds).
        lag: how late the generator sent it, in seconds (connect time for a new connection not
            included).
        status: the HTTP status, or `TIMEOUT`, `DROPPED`, `ERROR`.
        latency: seconds from `sched` to the end of the answer (or to the failure).
    """

    sched: float
    lag: float
    status: int
    latency: float


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of *values* by the nearest-rank method; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class _Connection(asyncio.Protocol):
    """One keep-alive client connection carrying at most one request at a time."""

    __slots__ = ("alive", "buffer", "gen", "issued", "last_used", "sched", "seq", "transport")

    def __init__(self, gen: LoadGenerator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.sched = -1.0  # < 0: no request outstanding
        self.issued = 0.0
        self.seq = 0
        self.last_used = 0.0
        self.alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, sched: float, issued: float) -> None:
        """Write the request scheduled at *sched*."""
        self.sched = sched
        self.issued = issued
        self.seq += 1
        self.buffer.clear()
        self.transport.write(self.gen.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        # Only the head is lowercased, once per answer: small, and header names are case-blind.
        head = bytes(buffer[:end]).lower()
        try:
            status = int(head[9:12])
            at = head.find(b"\r\ncontent-length:")
            length = 0
            if at >= 0:
                eol = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : eol if eol >= 0 else None])
        except ValueError:
            self.gen._fail(self)
            return
        if len(buffer) < end + 4 + length:
            return
        if self.sched < 0:  # an answer nobody asked for: the stream is out of step
            self.gen._fail(self)
            return
        self.gen._complete(self, status, b"\r\nconnection: close" in head)

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self.gen._lost(self)


@dataclass(slots=True)
class _Stats:
    """What the generator knows about itself, for trusting (or not) its numbers."""

    connections_opened: int = 0
    peak_open: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0


class LoadGenerator:
    """Drive one server with `GET path` requests; every outcome ends up in `records`.

    Args:
        host: the server's address (the demo uses 127.0.0.1 only).
        port: the server's port.
        path: the request path.
        timeout: client timeout in seconds, from the scheduled time.
        max_connections: the most connections open at once.
    """

    def __init__(
        self,
        host: str,
        port: int,
        path: str = "/",
        *,
        timeout: float = 5.0,
        max_connections: int = 4096,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.max_connections = max_connections
        self.request = (
            f"GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\nuser-agent: overload-demo\r\n\r\n"
        ).encode()
        self.records: list[Record] = []
        self.schedule: list[float] = []  # every scheduled time of the open loop, in order
        self.stats = _Stats()
        self.connect_times: list[float] = []  # seconds per new connection, in order
        self._idle: list[_Connection] = []
        self._open = 0  # connected or connecting
        self._all: set[_Connection] = set()
        # (deadline, tie-break, connection, its request number): a heap, because a request sent
        # after a slow connect joins with an earlier deadline than requests already waiting.
        self._inflight: list[tuple[float, int, _Connection, int]] = []
        self._ticket = itertools.count()
        self._pending = 0  # requests issued and not yet recorded
        self._drained = asyncio.Event()  # set whenever _pending drops to 0
        self._closed_loop = False
        self._sweeper: asyncio.Task[None] | None = None

    # --- issuing and completing ------------------------------------------------------------

    def _issue(self, sched: float) -> None:
        now = perf_counter()
        idle = self._idle
        while idle:
            conn = idle.pop()  # most recently used first: it is the least likely to be stale
            if conn.alive and now - conn.last_used < _IDLE_MAX:
                self._pending += 1
                conn.send(sched, now)
                self._watch(sched, conn)
                return
            if conn.alive:
                conn.transport.close()  # type: ignore[union-attr]
        if self._open >= self.max_connections:
            self.records.append(Record(sched, now - sched, DROPPED, 0.0))
            return
        self._open += 1
        self._pending += 1
        self.stats.connections_opened += 1
        self.stats.peak_open = max(self.stats.peak_open, self._open)
        asyncio.get_running_loop().create_task(self._connect_and_send(sched, now))

    async def _connect_and_send(self, sched: float, issued: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port),
                timeout=max(0.001, sched + self.timeout - perf_counter()),
            )
        except (asyncio.TimeoutError, OSError) as exc:
            self._open -= 1
            self._settled()
            status = TIMEOUT if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) else ERROR
            self.records.append(Record(sched, issued - sched, status, perf_counter() - sched))
            return
        self._all.add(conn)
        self.connect_times.append(perf_counter() - issued)
        conn.send(sched, issued)
        self._watch(sched, conn)

    async def warm(self, count: int, timeout: float = 2.0) -> int:
        """Open connections until *count* are idle and fresh; return how many were opened.

        Each load level starts from the same client state, whatever the level before it left:
        a pool sized for the level (see the demo), not one grown or aged by its history. A
        connection that fails or takes longer than *timeout* to connect is left out.
        """
        now = perf_counter()
        fresh: list[_Connection] = []
        for conn in self._idle:
            if conn.alive and now - conn.last_used < _IDLE_MAX:
                fresh.append(conn)
            elif conn.alive:
                conn.transport.close()  # type: ignore[union-attr]
        self._idle = fresh
        wanted = min(count - len(fresh), self.max_connections - self._open)
        if wanted <= 0:
            return 0
        opened = await asyncio.gather(*(self._open_idle(timeout) for _ in range(wanted)))
        return sum(opened)

    async def _open_idle(self, timeout: float) -> bool:
        """Open one connection into the idle pool; `False` if it failed or timed out."""
        self._open += 1  # as in _issue: counted while connecting, so _lost() balances it
        self.stats.connections_opened += 1
        self.stats.peak_open = max(self.stats.peak_open, self._open)
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port), timeout
            )
        except (asyncio.TimeoutError, OSError):
            self._open -= 1
            return False
        except BaseException:  # cancelled (Ctrl-C): keep the count right on the way out
            self._open -= 1
            raise
        if conn.alive:  # else already counted out by _lost()
            conn.last_used = perf_counter()
            self._all.add(conn)
            self._idle.append(conn)
        return True

    def _watch(self, sched: float, conn: _Connection) -> None:
        deadline = sched + self.timeout
        heapq.heappush(self._inflight, (deadline, next(self._ticket), conn, conn.seq))

    def _record(self, conn: _Connection, status: int) -> float:
        now = perf_counter()
        self.records.append(Record(conn.sched, conn.issued - conn.sched, status, now - conn.sched))
        conn.sched = -1.0
        conn.last_used = now
        self._settled()
        return now

    def _complete(self, conn: _Connection, status: int, close: bool) -> None:
        now = self._record(conn, status)
        if close:
            conn.transport.close()  # type: ignore[union-attr]
            if self._closed_loop:
                self._issue(now)
        elif self._closed_loop:
            self._pending += 1
            conn.send(now, now)
            self._watch(now, conn)
        else:
            self._idle.append(conn)

    def _fail(self, conn: _Connection) -> None:
        if conn.sched >= 0:
            self._record(conn, ERROR)
        conn.transport.abort()  # type: ignore[union-attr]

    def _lost(self, conn: _Connection) -> None:
        self._open -= 1
        self._all.discard(conn)
        if conn.sched >= 0:
            now = self._record(conn, ERROR)
            if self._closed_loop:
                self._issue(now)

    async def _sweep(self) -> None:
        inflight = self._inflight
        expires = perf_counter() + _MAX_LIFETIME
        while perf_counter() < expires:
            now = perf_counter()
            while inflight and inflight[0][0] <= now:
                _, _, conn, seq = heapq.heappop(inflight)
                if conn.seq == seq and conn.sched >= 0:  # still waiting for that answer
                    self._record(conn, TIMEOUT)
                    conn.transport.abort()  # type: ignore[union-attr]
            await asyncio.sleep(_SWEEP_EVERY)

    # --- running ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.close_all()

    def close_all(self) -> None:
        """Abort every connection; a request still waiting for its answer is an `ERROR`."""
        for conn in list(self._all):
            if conn.sched >= 0:
                self._record(conn, ERROR)
            if conn.transport is not None:
                conn.transport.abort()
        self._idle.clear()

    async def drain(self, limit: float) -> bool:
        """Wait, at most *limit* seconds, until every issued request has an outcome."""
        if self._pending > 0:
            self._drained.clear()
            with contextlib.suppress(asyncio.TimeoutError):  # not TimeoutError before 3.11
                await asyncio.wait_for(self._drained.wait(), limit)
        return self._pending == 0

    async def settle(self, begin: float, end: float, limit: float) -> bool:
        """Wait, at most *limit* seconds, until every request scheduled in `[begin, end)` has an
        outcome (later ones may still be pending)."""
        expected = self.scheduled_between(begin, end)
        for _ in range(math.ceil(limit / 0.05)):
            if sum(1 for r in self.records if begin <= r.sched < end) >= expected:
                return True
            await asyncio.sleep(0.05)
        return False

    def _settled(self) -> None:
        """One issued request has its outcome."""
        self._pending -= 1
        if self._pending == 0:
            self._drained.set()

    async def run_open(
        self,
        segments: Sequence[tuple[float, float]],
        *,
        start: float | None = None,
        stop: Callable[[float], bool] | None = None,
    ) -> tuple[float, list[float]]:
        """Send at fixed rates: *segments* is `(seconds, requests per second)` in order.

        Args:
            segments: the schedule; arrival k of a segment is due at `start + k / rate`.
            start: when the first segment starts (`time.perf_counter()`); by default 10 ms
                after `quiesce()`. Callers that pass it should call `quiesce()` first.
            stop: checked every 100 ms during the last segment with the current time; a true
                answer ends the schedule early (the recovery phase uses it).

        Returns:
            The time the schedule started and the start time of each segment. Outcomes are in
            `records` once `drain()` returns.
        """
        starts: list[float] = []
        cpu0, wall0 = time.process_time(), perf_counter()
        if start is None:
            self.quiesce()
            start = perf_counter() + 0.01
        gc.disable()  # see quiesce()
        try:
            await self._send_schedule(segments, start, starts, stop)
        finally:
            gc.enable()
        self.stats.cpu_seconds += time.process_time() - cpu0
        self.stats.wall_seconds += perf_counter() - wall0
        return start, starts

    @staticmethod
    def quiesce() -> None:
        """Collect garbage now and freeze what survives; `run_open` pauses the GC while it sends.

        A full collection walks every record and connection so far: tens of milliseconds of
        stall, which would show up as send lag in the middle of a schedule.
        """
        gc.collect()
        gc.freeze()

    async def _send_schedule(
        self,
        segments: Sequence[tuple[float, float]],
        start: float,
        starts: list[float],
        stop: Callable[[float], bool] | None,
    ) -> None:
        last_check = start
        final = start + sum(seconds for seconds, _ in segments[:-1])
        for due in self._arrivals(segments, start, starts):
            # uvloop's timers have 1 ms resolution: a sleep may end up to 1 ms early (never send
            # before the schedule: a fast answer would read as a negative latency) or late (the
            # lag this adds is measured, not hidden).
            while (now := perf_counter()) < due:  # noqa: ASYNC110 - a time, not an event
                await asyncio.sleep(due - now)
            self.schedule.append(due)
            self._issue(due)
            if stop is not None and now >= final and now - last_check >= 0.1:
                last_check = now
                if stop(now):
                    break

    @staticmethod
    def _arrivals(
        segments: Sequence[tuple[float, float]], start: float, starts: list[float]
    ) -> Iterator[float]:
        begin = start
        for seconds, rate in segments:
            starts.append(begin)
            for k in range(round(seconds * rate)):
                yield begin + k / rate
            begin += seconds

    async def run_closed(self, concurrency: int, seconds: float, warmup: float) -> float:
        """Keep *concurrency* requests in flight; return the 2xx throughput after *warmup*."""
        self._closed_loop = True
        try:
            now = perf_counter()
            for _ in range(concurrency):
                self._issue(now)
            await asyncio.sleep(warmup)
            first, begin = len(self.records), perf_counter()
            await asyncio.sleep(seconds)
            last, end = len(self.records), perf_counter()
        finally:
            self._closed_loop = False
        await self.drain(self.timeout + 1.0)
        ok = sum(1 for r in self.records[first:last] if 200 <= r.status < 300)
        return ok / (end - begin)

    def scheduled_between(self, begin: float, end: float) -> int:
        """How many open-loop arrivals were scheduled in `[begin, end)`."""
        return bisect.bisect_left(self.schedule, end) - bisect.bisect_left(self.schedule, begin)

    @property
    def pending(self) -> int:
        """Requests issued and still without an outcome."""
        return self._pending
