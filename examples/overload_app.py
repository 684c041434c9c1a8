"""The example apps of the overload demo, and the runner that serves one under uvicorn.

Two bare ASGI apps (no framework, so the numbers are uvicorn's and the middleware's):

- `cpu`: about 2 ms of pure-Python CPU, then `await asyncio.sleep(0.005)` (a fast I/O call);
- `io`: about 0.5 ms of CPU, then `await asyncio.sleep(0.05)` (a slow I/O call).

Each is served one of three ways (`--variant`): `unprotected`; `limit32` (uvicorn's own
`--limit-concurrency 32`); or `protected` by `resilient.asgi.protect(app)` with its defaults.
`--limit JSON` overrides options of the adaptive limit that `protect` makes, to try other
defaults (the output says which options ran).

`overload_demo.py` starts this file pinned to core 0:

    taskset -c 0 python examples/overload_app.py --kind cpu --variant protected

It binds 127.0.0.1 on an ephemeral port, then prints one JSON line on stdout (`port`, which
protection is in use, the calibrated CPU burn) and serves with `--http httptools --loop uvloop`,
one worker, `--log-level warning`, until it is terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import itertools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from resilient import AdaptiveConcurrencyLimit
from resilient.asgi import LoadSheddingMiddleware, protect
from resilient.asgi._protect import LIMIT_DEFAULTS


if TYPE_CHECKING:
    from resilient.asgi import ASGIApp, Receive, Scope, Send


KINDS: dict[str, tuple[float, float]] = {"cpu": (0.002, 0.005), "io": (0.0005, 0.05)}
"""App kind -> (seconds of CPU, seconds of awaited I/O) per request."""
VARIANTS = ("unprotected", "limit32", "protected")

_RESPONSE_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"3")],
}
_RESPONSE_BODY = {"type": "http.response.body", "body": b"ok\n", "more_body": False}


_ROW = 128


def _spin(n: int) -> int:
    """Pure-Python CPU work: about *n* iterations of integer arithmetic (the GIL held throughout).

    Every value stays among CPython's cached small ints (below 257), so the loop allocates no
    ints (only one short-lived iterator per 128 iterations). A loop that allocates all the time
    runs at a speed that depends on the allocator's state, which anything else in the process
    changes: the demo's first loop, `x = (x + i * i) & 0xFFFF`, ran 9% slower behind a
    do-nothing wrapper that kept three floats alive per request (docs/benchmarks.md), and the
    demo needs the same CPU per request whatever serves the app.
    """
    x = 0
    row = range(_ROW)
    for _ in itertools.repeat(None, n // _ROW):
        for j in row:
            x = (x + j) & 0x7F
    return x


def calibrate(seconds: float, trials: int = 7) -> int:
    """Return the `_spin` count that takes about *seconds* of CPU on this core."""
    probe = 20_000
    best = min(_timed(probe) for _ in range(trials))  # the minimum is the least disturbed run
    return max(1, round(probe * seconds / best))


def _timed(n: int) -> float:
    start = time.perf_counter()
    _spin(n)
    return time.perf_counter() - start


def make_app(cpu: float, io: float, spins: int | None = None) -> ASGIApp:
    """A bare ASGI app: burn *cpu* seconds of CPU, await *io* seconds, answer `200 ok`.

    *spins* fixes the CPU burn (a `_spin` count) instead of calibrating it: the demo calibrates
    once per app kind and gives every server the same count, since two calibrations can differ
    by several percent and the servers are compared to one capacity.
    """
    spins = calibrate(cpu) if spins is None else spins

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        _spin(spins)
        await asyncio.sleep(io)
        await send(_RESPONSE_START)
        await send(_RESPONSE_BODY)

    app.spins = spins  # type: ignore[attr-defined]
    return app


async def _lifespan(receive: Receive, send: Send) -> None:
    # Bounded: a server sends exactly one startup and one shutdown message.
    for _ in range(2):
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def build(
    kind: str, variant: str, overrides: dict[str, Any] | None, spins: int | None = None
) -> tuple[ASGIApp, str, int]:
    """The app to serve, a description of its protection, and its CPU spin count.

    Args:
        kind: `cpu` or `io`.
        variant: one of `VARIANTS`.
        overrides: options of protect's adaptive limit to change (`None` or empty: its
            defaults).
        spins: the CPU burn, or `None` to calibrate it here.
    """
    cpu, io = KINDS[kind]
    app = make_app(cpu, io, spins)
    spins: int = app.spins  # type: ignore[attr-defined]
    if variant != "protected":
        return app, variant, spins
    if not overrides:
        return protect(app), "resilient.asgi.protect(app) (defaults)", spins
    options = {**LIMIT_DEFAULTS, **overrides}
    described = ", ".join(f"{k}={v!r}" for k, v in options.items())
    limit = AdaptiveConcurrencyLimit(**options, name="protect")
    protection = f"protect(app, limit=AdaptiveConcurrencyLimit({described}))"
    return protect(app, limit=limit), protection, spins


def serve(
    kind: str, variant: str, overrides: dict[str, Any] | None, spins: int | None = None
) -> None:
    """Bind 127.0.0.1:0, announce the port on stdout, and serve until terminated."""
    app, protection, spins = build(kind, variant, overrides, spins)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    # Listen before announcing: connections made before uvicorn accepts wait in the backlog.
    sock.listen(2048)
    config = uvicorn.Config(
        app,
        http="httptools",
        loop="uvloop",
        workers=1,
        log_level="warning",
        limit_concurrency=32 if variant == "limit32" else None,
        backlog=2048,
    )
    _trace_limit(app)
    announce = {"port": sock.getsockname()[1], "protection": protection, "spins": spins}
    print(json.dumps(announce), flush=True)
    uvicorn.Server(config).run(sockets=[sock])


def _trace_limit(app: object) -> None:
    """With `OVERLOAD_TRACE=FILE`: append the limit's and the shedder's state every 0.1 s."""
    path = os.environ.get("OVERLOAD_TRACE")
    if not path:
        return
    limit, shedder, node = None, None, app
    while node is not None:  # walk protect()'s stack: each layer keeps the next in `.app`
        if isinstance(getattr(node, "limit", None), AdaptiveConcurrencyLimit):
            limit = node.limit  # type: ignore[attr-defined]
        if isinstance(node, LoadSheddingMiddleware):
            shedder = node
        node = getattr(node, "app", None)

    def write() -> None:
        start = time.perf_counter()
        with Path(path).open("a") as out:
            while True:
                time.sleep(0.1)
                stats = limit.statistics() if limit else None
                delay = shedder.monitor.current_delay if shedder and shedder.monitor else None
                shed = shedder.shed_counts() if shedder else None
                out.write(f"{time.perf_counter() - start:7.2f} {stats} delay={delay} {shed}\n")
                out.flush()

    threading.Thread(target=write, daemon=True).start()


_STARTED: list[ServerProcess] = []


def stop_all() -> None:
    """Stop every server this process started (the demo's last line of defence)."""
    for server in _STARTED:
        server.stop()


def _die_with_parent() -> None:
    # Linux: SIGKILL this server if the demo dies without its finally (kill -9, OOM killer).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class ServerProcess:
    """One uvicorn server in its own process, pinned to *core* with `taskset`.

    Args:
        kind: `cpu` or `io`.
        variant: one of `VARIANTS`.
        overrides: as for `build()`.
        spins: as for `build()`.
        core: the CPU the server may run on.
    """

    def __init__(
        self,
        kind: str,
        variant: str,
        overrides: dict[str, Any] | None,
        spins: int | None = None,
        core: int = 0,
    ) -> None:
        taskset = shutil.which("taskset")
        # os.cpu_count(), not this process's affinity: the demo has already pinned itself.
        pin = [taskset, "-c", str(core)] if taskset and (os.cpu_count() or 1) > 1 else []
        self.command = [*pin, sys.executable, str(Path(__file__).resolve()), "--kind", kind]
        self.command += ["--variant", variant]
        if overrides and variant == "protected":
            self.command += ["--limit", json.dumps(overrides)]
        if spins is not None:
            self.command += ["--spins", str(spins)]
        self.port = 0
        self.protection = ""
        self.spins = 0
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id (taskset execs it, so it is the same process)."""
        return self._process.pid if self._process else -1

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait, at most *timeout* seconds, for it to announce its port."""
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and file
            self.command,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the demo only; the demo stops the server
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads exist when it runs
        )
        _STARTED.append(self)
        stdout = self._process.stdout
        poller = select.poll()  # not select(): the demo may hold more than 1024 descriptors
        if stdout is not None:
            poller.register(stdout, select.POLLIN)
        ready = poller.poll(timeout * 1000)
        line = stdout.readline() if ready and stdout else b""
        if not line:
            self.stop()
            msg = f"server did not start: {' '.join(self.command)}\n{self.stderr_text()}"
            raise RuntimeError(msg)
        announce = json.loads(line)
        self.port, self.protection, self.spins = (
            announce["port"],
            announce["protection"],
            announce["spins"],
        )

    async def wait_ready(self, limit: float = 10.0) -> None:
        """Send single requests until the server answers 200 (at most *limit* seconds)."""
        deadline = time.perf_counter() + limit
        host, port = "127.0.0.1", self.port
        request = f"GET / HTTP/1.1\r\nhost: {host}:{port}\r\nconnection: close\r\n\r\n".encode()
        while time.perf_counter() < deadline:
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
                writer.write(request)
                answer = await asyncio.wait_for(reader.read(), 2.0)
                writer.close()
                if answer.startswith(b"HTTP/1.1 200"):
                    return
            await asyncio.sleep(0.1)
        msg = f"server on port {port} never answered 200"
        raise RuntimeError(msg)

    async def cool_down(self, limit: float = 8.0) -> float:
        """Wait until the server has been idle for 0.2 s (at most *limit* s); return the wait.

        Between load levels: a server still working off the last level's backlog (abandoned
        requests run to completion) would make the next level look worse than it is.
        """
        start = time.perf_counter()
        quiet, used = 0, self.cpu_seconds()
        while time.perf_counter() - start < limit and quiet < 2:
            await asyncio.sleep(0.1)
            now_used = self.cpu_seconds()
            quiet = quiet + 1 if now_used - used <= 0.011 else 0  # at most one 10 ms tick
            used = now_used
        return time.perf_counter() - start

    def cpu_seconds(self) -> float:
        """CPU time the server has used so far (user + system)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after one second)."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(1.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5.0)

    def stderr_text(self) -> str:
        """Everything the server wrote on stderr."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def stderr_summary(self, top: int = 4) -> list[str]:
        """The most frequent stderr lines, with counts (uvicorn warns once per 503 it sends)."""
        lines = [line for line in self.stderr_text().splitlines() if line.strip()]
        counts = collections.Counter(lines).most_common(top)
        return [f"{count} x {line[:150]}" for line, count in counts]


def listen_drops() -> int:
    """The kernel's count of connections dropped because a listen queue was full (all hosts)."""
    try:
        header, values = Path("/proc/net/netstat").read_text().splitlines()[:2]
    except (OSError, ValueError):
        return 0
    counters = dict(zip(header.split(), values.split(), strict=False))
    return int(counters.get("ListenDrops", 0))


def accept_queue(port: int) -> int:
    """Connections waiting in the server's kernel accept queue (not yet seen by uvicorn).

    Listening sockets come first in /proc/net/tcp, so the read stops after a few lines.
    """
    wanted = f":{port:04X}"
    with contextlib.suppress(OSError), Path("/proc/net/tcp").open() as table:
        next(table)  # the header
        for _, line in zip(range(10_000), table, strict=False):
            fields = line.split()
            if fields[3] != "0A":  # past the listening sockets
                break
            if fields[1].endswith(wanted):
                return int(fields[4].split(":")[1], 16)  # rx_queue: the accept backlog
    return 0


async def sample_accept_queue(port: int, peak: list[int]) -> None:
    """Keep the largest accept-queue length in `peak[0]` until cancelled (at most 10 min)."""
    for _ in range(6000):
        peak[0] = max(peak[0], accept_queue(port))
        await asyncio.sleep(0.1)


class CpuMeter:
    """CPU used on cores 0 and 1 by anything other than the server and this process.

    The machine is shared: a foreign process on either core distorts the numbers, so each row
    says how much other work ran beside it.
    """

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.start = self._snapshot()

    def _snapshot(self) -> tuple[float, float, float, float, float]:
        tick = os.sysconf("SC_CLK_TCK")
        busy = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *values = line.split()
            if name in ("cpu0", "cpu1"):
                user, nice, system, _, _, _, _, steal = (int(v) for v in values[:8])
                busy[name] = (user + nice + system + steal) / tick
        own = os.times()
        return (
            time.perf_counter(),
            busy.get("cpu0", 0.0),
            busy.get("cpu1", 0.0),
            self.server.cpu_seconds(),
            own.user + own.system,
        )

    def read(self) -> tuple[float, float, float]:
        """Since the start, as shares of a core: the server's CPU, and foreign work on the
        server's core (0) and on the generator's core (1)."""
        end = self._snapshot()
        wall, core0, core1, server, own = (b - a for a, b in zip(self.start, end, strict=True))
        if wall <= 0:
            return 0.0, 0.0, 0.0
        return server / wall, max(0.0, (core0 - server) / wall), max(0.0, (core1 - own) / wall)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--kind", choices=sorted(KINDS), required=True)
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument(
        "--limit",
        metavar="JSON",
        help="options of protect's adaptive limit to override",
    )
    parser.add_argument("--spins", type=int, help="the CPU burn per request (default: calibrate)")
    args = parser.parse_args(argv)
    overrides = json.loads(args.limit) if args.limit else None
    serve(args.kind, args.variant, overrides, args.spins)
    return 0


if __name__ == "__main__":
    sys.exit(main())
