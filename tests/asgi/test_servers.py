"""The ASGI middleware under real servers (uvicorn, hypercorn, granian) over real sockets.

Each test runs once per server. uvicorn and hypercorn run in a thread, granian in a subprocess; the
apps come from `helpers.server_apps` and log what reaches them to a file, so the tests can tell
from outside granian's process that a rejected request never reached the app. It shows that:

- `BodySizeLimitMiddleware` answers 413 to an oversized declared body before the app runs, cuts a
  chunked upload at the limit, answers 408 to a stalled or trickling body, and that malformed
  `Content-Length` values get 400 whoever answers them (the server or the middleware);
- `protect(limit=ConcurrencyLimit(1, max_wait=0))` answers 503 with a whole-seconds `Retry-After`
  while its permit is held, but never to `/healthz`;
- `protect()` starts its loop monitor on lifespan startup and stops it on a clean shutdown.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest


sys.path.insert(0, str(Path(__file__).parent.parent))

from helpers import server_apps
from helpers.server import (
    answered,
    closed_by_peer,
    connect,
    read_response,
    serve,
    serve_granian,
    serve_hypercorn,
)
from helpers.server_apps import EVENTS, LIMIT, read_events


if TYPE_CHECKING:
    import socket
    from collections.abc import Iterator

SERVERS = ["uvicorn", "hypercorn", "granian"]


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def events(tmp_path: Path) -> Path:
    return tmp_path / "events.jsonl"


@contextlib.contextmanager
def running(server: str, factory: str, events: Path) -> Iterator[int]:
    """Serve `server_apps.<factory>` under *server*, lifespan on; yield the port."""
    if server == "granian":
        target = f"helpers.server_apps:{factory}"
        with serve_granian(target, factory=True, env={EVENTS: str(events)}) as granian:
            yield granian.port
        assert granian.returncode == 0, granian.output
        return
    app = getattr(server_apps, factory)(events)
    with serve(app, lifespan="on") if server == "uvicorn" else serve_hypercorn(app) as port:
        yield port


def calls(events: Path) -> list[str]:
    return [e["path"] for e in read_events(events) if e["event"] == "call"]


def largest_body(events: Path) -> int:
    return max((e["received"] for e in read_events(events) if e["event"] == "body"), default=0)


def post(sock: socket.socket, headers: bytes, body: bytes = b"", path: bytes = b"/") -> None:
    sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n" + body)


def stream_until_cut(sock: socket.socket, path: bytes = b"/") -> int:
    """Send an endless chunked body until the server stops it; return the bytes sent."""
    post(sock, b"Transfer-Encoding: chunked\r\n", path=path)
    chunk, sent = b"%x\r\n%s\r\n" % (65536, b"y" * 65536), 0
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # not TimeoutError: a hang
        while sent < 64 * 1024**2:
            sock.sendall(chunk)
            sent += 65536
    return sent


def test_honest_bodies_pass_on_a_kept_alive_connection(server: str, events: Path) -> None:
    with running(server, "body_limited", events) as port, connect(port) as sock:
        for size in (1000, LIMIT):
            post(sock, b"Content-Length: %d\r\n" % size, b"x" * size)
            assert read_response(sock)[::2] == (200, b"%d" % size)


def test_a_declared_body_over_the_limit_gets_413_before_the_app_runs(
    server: str, events: Path
) -> None:
    with running(server, "body_limited", events) as port, connect(port) as sock:
        # hypercorn answers `100 Continue` as soon as it has the head (the others do not):
        # read_response skips it, and the 413 follows at once.
        post(sock, b"Content-Length: %d\r\nExpect: 100-continue\r\n" % (4 * 1024**3))
        status, headers, body = read_response(sock)
        assert (status, headers["connection"], body) == (413, "close", b"Content Too Large\n")
        assert closed_by_peer(sock)
    assert calls(events) == []


def test_a_chunked_body_over_the_limit_gets_413(server: str, events: Path) -> None:
    body = b"z" * (LIMIT + 1)
    with running(server, "body_limited", events) as port, connect(port) as sock:
        post(sock, b"Transfer-Encoding: chunked\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        status, headers, _ = read_response(sock)
        assert (status, headers["connection"]) == (413, "close")
    assert calls(events) == ["/"]
    assert largest_body(events) <= LIMIT  # however the server splits the chunk


@pytest.mark.parametrize("path", [b"/", b"/early"])
def test_an_endless_chunked_upload_is_cut_at_the_limit(
    server: str, events: Path, path: bytes
) -> None:
    with running(server, "body_limited", events) as port, connect(port) as sock:
        assert stream_until_cut(sock, path) < 64 * 1024**2
        sock.settimeout(5)
        answer = b""
        with contextlib.suppress(ConnectionResetError):  # the reset may beat the answer
            while chunk := sock.recv(65536):
                answer += chunk
    assert largest_body(events) <= LIMIT
    if path == b"/" or server == "granian":
        # granian holds back a response head until the first body message: when the app has
        # "started" but sent no body, it answers 500 itself, since nothing was on the wire.
        expected = b"HTTP/1.1 413" if path == b"/" else b"HTTP/1.1 500"
        assert answer == b"" or answer.startswith(expected), answer
    else:  # the response had started: it is left unfinished and the connection dropped
        assert answer == b"" or answer.startswith(b"HTTP/1.1 200"), answer
        assert b"\r\n0\r\n\r\n" not in answer  # never the last chunk


def test_malformed_content_lengths_get_400_and_never_reach_the_app(
    server: str, events: Path
) -> None:
    values = [b"-1", b"+5", b"5_0", b"abc", b"5, 6", b"\xd9\xa5", b"5\r\nContent-Length: 6"]
    statuses = {}
    with running(server, "body_limited", events) as port:
        for value in values:  # every server here refuses these itself
            with connect(port) as sock:
                post(sock, b"Content-Length: " + value + b"\r\n", b"hello")
                statuses[value] = read_response(sock)[0]
    assert statuses == dict.fromkeys(values, 400)
    assert calls(events) == []


def test_content_length_beside_transfer_encoding(server: str, events: Path) -> None:
    with running(server, "body_limited", events) as port, connect(port) as sock:
        headers = b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"
        post(sock, headers, b"5\r\nhello\r\n0\r\n\r\n")
        status, response_headers, body = read_response(sock)
        assert closed_by_peer(sock)
    if server == "granian":  # hyper lets Transfer-Encoding win, drops the length, then closes
        assert (status, body, calls(events)) == (200, b"5", ["/"])
    else:  # uvicorn refuses it itself; hypercorn passes both headers, and the middleware refuses
        assert (status, response_headers["connection"], calls(events)) == (400, "close", [])
        assert server != "hypercorn" or body == b"Bad Request\n"  # the middleware's own answer


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickling"])
def test_a_slow_body_gets_408(server: str, events: Path, trickle: bool) -> None:
    with running(server, "body_limited", events) as port, connect(port) as sock:
        post(sock, b"Content-Length: 5000\r\n", b"only ten b")  # a lying length, or a slow body
        started = time.monotonic()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            # 1 byte per 50 ms: 20 B/s, under `min_rate` (200 B/s) once 0.6 s have passed;
            # without it, `chunk_timeout` (0.3 s) ends the stalled body.
            while trickle and time.monotonic() - started < 5 and not answered(sock):
                sock.sendall(b"x")
                time.sleep(0.05)
        status, headers, _ = read_response(sock)
        assert (status, headers["connection"]) == (408, "close")
        assert time.monotonic() - started < 3
    assert calls(events) == ["/"]
    if trickle:  # the trickle went through, in gaps shorter than `chunk_timeout`
        assert largest_body(events) > 10


def test_an_http10_keep_alive_upload_refused_early_does_not_desync(
    server: str, events: Path
) -> None:
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
    body = smuggled.ljust(LIMIT + 100, b"x")
    with running(server, "body_limited", events) as port, connect(port) as sock:
        sock.sendall(
            b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        assert read_response(sock)[0] == 413
        assert closed_by_peer(sock)
    assert calls(events) == []


@pytest.mark.parametrize("server", SERVERS)
def test_an_early_answer_to_http10_keep_alive_says_connection_close(
    server: str, events: Path
) -> None:
    with running(server, "body_limited", events) as port, connect(port) as sock:
        sock.sendall(
            b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 99999999\r\n\r\n"
        )
        status, headers, _ = read_response(sock)
        assert closed_by_peer(sock)
    # granian sometimes adds its own `keep-alive` for an HTTP/1.0 keep-alive client ("close,
    # keep-alive"): "close" among the options is what tells the client (RFC 9112, 9.6).
    tokens = {token.strip() for token in headers.get("connection", "").split(",")}
    assert (status, "close" in tokens) == (413, True)


def test_the_held_permit_turns_others_away_but_not_health_checks(server: str, events: Path) -> None:
    with running(server, "protected", events) as port, connect(port) as held:
        held.sendall(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
        deadline = time.monotonic() + 10
        while not any(e["event"] == "holding" for e in read_events(events)):
            assert time.monotonic() < deadline, "the held request never reached the app"
            time.sleep(0.01)
        for path in (b"/", b"/other"):
            with connect(port) as sock:
                sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
                status, headers, body = read_response(sock)
            assert (status, body) == (503, b"Service Unavailable\n")
            assert headers["retry-after"].isdigit()
            assert int(headers["retry-after"]) >= 1
            assert headers["content-type"].startswith("text/plain")
        with connect(port) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock)[0] == 200
        events.with_suffix(".release").touch()
        assert read_response(held)[::2] == (200, b"0")
    assert calls(events) == ["/hold", "/healthz"]


def test_the_loop_monitor_runs_from_lifespan_startup_to_shutdown(server: str, events: Path) -> None:
    with running(server, "protected", events) as port:
        assert read_events(events) == [{"event": "startup", "monitor_running": True}]
        with connect(port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock)[0] == 200
    # The server has stopped (granian with exit code 0): the app saw the shutdown, after the
    # middleware had stopped the monitor.
    assert read_events(events)[-1] == {"event": "shutdown", "monitor_running": False}
