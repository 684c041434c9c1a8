"""BodySizeLimitMiddleware under a real uvicorn, against hostile clients on 127.0.0.1."""

from __future__ import annotations

import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from resilient.asgi import BodySizeLimitMiddleware


sys.path.insert(0, str(Path(__file__).parent.parent))

from helpers.server import closed_by_peer, connect, read_response, serve


LIMIT = 64 * 1024
SERVERS = ["h11", "httptools"]


class CountingApp:
    """Reads the whole body, counting bytes; answers 200 with the count."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.largest = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            size += len(message.get("body", b""))
            with self.lock:
                self.largest = max(self.largest, size)
            if not message.get("more_body"):
                break
        text = str(size).encode()
        headers = [(b"content-length", str(len(text)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": text})


def protected(app: CountingApp, **options: Any) -> BodySizeLimitMiddleware:
    return BodySizeLimitMiddleware(app, max_body_size=LIMIT, **options)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("http", SERVERS)
def test_an_honest_body_passes_and_keep_alive_still_works(http: str) -> None:
    app = CountingApp()
    with serve(protected(app), http=http) as port, connect(port) as sock:
        for _ in range(2):
            body = b"x" * 1000
            sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + body)
            assert read_response(sock)[::2] == (200, b"1000")


@pytest.mark.parametrize("http", SERVERS)
def test_a_huge_declared_body_is_refused_before_a_byte_is_read(http: str) -> None:
    app = CountingApp()
    before = rss_mib()
    with serve(protected(app), http=http) as port, connect(port) as sock:
        four_gib = 4 * 1024**3
        sock.sendall(
            f"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {four_gib}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        status, headers, _ = read_response(sock)
        assert status == 413
        assert headers["connection"] == "close"
        assert closed_by_peer(sock)
    assert app.largest == 0
    assert rss_mib() - before < 50


@pytest.mark.parametrize("http", SERVERS)
def test_a_chunked_stream_far_past_the_limit_is_cut(http: str) -> None:
    app = CountingApp()
    before = rss_mib()
    with serve(protected(app), http=http) as port, connect(port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"y" * 65536)
        sent = 0
        try:
            while sent < 2 * 1024**3:  # offer 2 GiB; the server must stop us long before
                sock.sendall(chunk)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        else:  # pragma: no cover - the server took 2 GiB: fail with a useful message
            pytest.fail("the server accepted the whole multi-gigabyte body")
        assert sent < 64 * 1024**2
    assert app.largest <= LIMIT
    assert rss_mib() - before < 50


@pytest.mark.parametrize("http", SERVERS)
def test_a_chunked_body_over_the_limit_gets_413_when_the_client_stops(http: str) -> None:
    app = CountingApp()
    with serve(protected(app), http=http) as port, connect(port) as sock:
        body = b"z" * (LIMIT + 1)
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        )
        status, headers, _ = read_response(sock)
        assert status == 413
        assert headers["connection"] == "close"
    assert app.largest == 0  # the one chunk crossed the limit: the app saw none of it


@pytest.mark.parametrize("http", SERVERS)
@pytest.mark.parametrize("value", [b"-1", b"+5", b"5_0", b"abc", b"5, 6"])
def test_a_lying_content_length_gets_400(http: str, value: bytes) -> None:
    app = CountingApp()
    with serve(protected(app), http=http) as port, connect(port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: " + value + b"\r\n\r\nhello")
        status, _, _ = read_response(sock)
        # The server's own parser refuses most of these first; either way the answer is 400.
        assert status == 400
    assert app.largest == 0


@pytest.mark.parametrize("http", SERVERS)
def test_a_body_shorter_than_declared_times_out_with_408(http: str) -> None:
    app = CountingApp()
    mw = protected(app, chunk_timeout=0.3, min_rate=None)
    with serve(mw, http=http) as port, connect(port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten b")
        started = time.monotonic()
        status, headers, _ = read_response(sock)
        assert status == 408
        assert headers["connection"] == "close"
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("http", SERVERS)
def test_a_trickling_client_gets_408(http: str) -> None:
    app = CountingApp()
    mw = protected(app, chunk_timeout=5, min_rate=200, grace_period=0.3)
    with serve(mw, http=http) as port, connect(port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n")
        sock.settimeout(0.05)
        started = time.monotonic()
        status = None
        while time.monotonic() - started < 5:
            try:
                sock.sendall(b"x")  # 1 byte per 50 ms: 20 bytes/s, far under 200
                if sock.recv(1, 0x40):  # MSG_DONTWAIT: has the server answered?
                    break
            except (BlockingIOError, TimeoutError):
                time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):  # pragma: no cover - closed early
                break
        sock.settimeout(5)
        status = read_response(sock)[0] if status is None else status
    assert status == 408
    assert time.monotonic() - started < 3
