"""Real servers on 127.0.0.1 and a free port: uvicorn and hypercorn in a thread, granian in a
subprocess; and raw-socket helpers to talk to them.

Every context manager yields the port once the server accepts connections, and stops the server
when the block ends (granian: SIGTERM, then SIGKILL of its whole process group after a timeout), so
no server outlives its test. A server that cannot start, or does not stop cleanly, is an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
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
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence


TESTS_DIR = Path(__file__).resolve().parent.parent
"""Put on granian's `PYTHONPATH`, so that it can import `helpers.<module>:<attr>`."""
READY_ROUTE = "/__granian_ready__"


@contextlib.contextmanager
def serve(app: Any, *, http: str = "auto", **options: Any) -> Iterator[int]:
    """Run *app* under uvicorn until the block ends; yield the port.

    Lifespan is off unless `lifespan="on"` is passed.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options = {"lifespan": "off", **options}
    config = uvicorn.Config(app, http=http, log_level="warning", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            msg = "uvicorn did not start"
            raise RuntimeError(msg)
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def serve_hypercorn(app: Any, **options: Any) -> Iterator[int]:
    """Run *app* under hypercorn (asyncio worker, lifespan on) in a thread; yield the port.

    *options* set attributes of hypercorn's `Config` (e.g. `graceful_timeout=1`).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # bound, not listening: refused until hypercorn listens
    port: int = sock.getsockname()[1]
    config = HypercornConfig()
    config.bind = [f"fd://{os.dup(sock.fileno())}"]  # hypercorn owns (and closes) the copy
    config.graceful_timeout = 2.0
    config.loglevel = "WARNING"
    for name, value in options.items():
        setattr(config, name, value)
    stops: list[Callable[[], object]] = []
    errors: list[BaseException] = []

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        stops.append(lambda: loop.call_soon_threadsafe(stopping.set))
        await hypercorn_serve(app, config, shutdown_trigger=stopping.wait)

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as error:
            errors.append(error)  # reported by the main thread

    thread = threading.Thread(target=run, name=f"hypercorn-{port}", daemon=True)
    thread.start()
    try:
        wait_for_port(port, alive=thread.is_alive, server="hypercorn")
        yield port
    finally:
        for stop in stops:
            with contextlib.suppress(RuntimeError):  # its loop is closed: it has stopped already
                stop()
        thread.join(timeout=10)
        sock.close()
    if thread.is_alive():
        msg = "hypercorn did not stop within 10 s"
        raise RuntimeError(msg)
    if errors:
        msg = "hypercorn failed"
        raise RuntimeError(msg) from errors[0]


class Granian:
    """What a finished granian subprocess left: its exit code and its output."""

    def __init__(self) -> None:
        self.port = 0
        self.returncode: int | None = None
        self.output = ""


@contextlib.contextmanager
def serve_granian(
    target: str,
    *,
    factory: bool = False,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    stop_timeout: float = 10.0,
) -> Iterator[Granian]:
    """Run granian (ASGI interface, one worker) on *target* (`module:attr`) in a subprocess.

    *target* is imported with `tests/` on the path (so `helpers.some_module:app` works), and with
    *env* added to the environment; `factory=True` calls it to make the app. Yields a `Granian`
    whose `port` is set at once and whose `returncode` and `output` are set when the block ends.

    Granian's main process listens before its worker has run the lifespan startup, so a listening
    port is not a ready app: the block starts once the worker serves a static file (granian's
    own static route, which never reaches the app). Granian is stopped with SIGTERM (a graceful
    shutdown, lifespan included) and, if it has not exited after *stop_timeout* seconds, its whole
    process group is killed; then the block fails.
    """
    result = Granian()
    result.port = free_port()
    environ = {**os.environ, **(env or {})}
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR), *filter(None, [environ.get("PYTHONPATH")])]
    )
    command = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(result.port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
        *(["--factory"] if factory else []),
        *args,
        target,
    ]
    with tempfile.TemporaryDirectory() as static, tempfile.TemporaryFile() as log:
        Path(static, "ready").write_text("ready")
        command[-1:-1] = ["--static-path-route", READY_ROUTE, "--static-path-mount", static]
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environ,
            start_new_session=True,  # its own process group: killable with its workers
        )
        killed = False
        try:
            try:
                wait_for_port(result.port, alive=lambda: process.poll() is None, server="granian")
                _wait_until_served(result.port, f"{READY_ROUTE}/ready")
            except (RuntimeError, OSError):
                log.seek(0)
                result.output = log.read().decode(errors="replace")
                raise RuntimeError(f"granian did not start:\n{result.output}") from None
            yield result
        finally:
            killed = _terminate(process, stop_timeout)
            log.seek(0)
            result.output = log.read().decode(errors="replace")
            result.returncode = process.returncode
    if killed:
        raise RuntimeError(f"granian did not stop on SIGTERM:\n{result.output}")


def _wait_until_served(port: int, path: str, timeout: float = 20.0) -> None:
    """GET *path*: the listening socket holds the request until a worker serves it."""
    with connect(port, timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: ready\r\nConnection: close\r\n\r\n".encode())
        status = read_response(sock)[0]
    if status != 200:
        raise RuntimeError(f"GET {path} answered {status}")


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Stop *process* (SIGTERM, then SIGKILL to its group); return whether it had to be killed."""
    killed = False
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            killed = True
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # its workers too, whatever the parent did
    process.wait()
    return killed


def free_port() -> int:
    """A port that was free a moment ago (for servers that must bind it themselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def wait_for_port(
    port: int, *, alive: Callable[[], bool], server: str, timeout: float = 20.0
) -> None:
    """Wait until 127.0.0.1:*port* accepts a connection, while *alive*() says the server runs."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        if not alive():
            raise RuntimeError(f"{server} exited before it listened")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server} did not listen within {timeout} s")
        time.sleep(0.02)


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (status, lowercase headers, body by content-length).

    Interim `1xx` responses (`100 Continue`) are skipped. A connection closed before a status line
    raises `ConnectionError`.
    """
    data = b""
    while True:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0]:
            msg = "the server closed the connection without a response"
            raise ConnectionError(msg)
        status = int(lines[0].split()[1])
        if not 100 <= status < 200:  # skip 1xx
            break
        data = rest
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the server closes the connection (EOF or reset) within *timeout*."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def answered(sock: socket.socket) -> bool:
    """Whether the server has sent something (without reading it)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)  # MSG_DONTWAIT alone still waits out a socket's timeout
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    finally:
        sock.settimeout(timeout)
