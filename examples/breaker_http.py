"""A circuit breaker guarding an outbound HTTP call to an upstream that breaks, then recovers.

Runs on its own, with no network: it starts a tiny HTTP server on 127.0.0.1 (an ephemeral port)
in a thread and calls it with urllib. The story, in about three seconds:

1. The upstream answers 200: calls go through.
2. It starts answering 503 with `Retry-After: 1`: three failures in a row open the circuit, for
   1 s rather than the 0.5 s backoff, because the upstream asked for that.
3. While open, calls are rejected at once (microseconds, not a round trip), with `retry_after`.
4. The first probe after the wait still sees a 503: open again (the backoff doubles).
5. The upstream recovers: the next probe succeeds and the circuit closes.

    python examples/breaker_http.py
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from resilient import Backoff, CircuitBreaker, CircuitOpenError, ConsecutiveFailures


class Upstream(BaseHTTPRequestHandler):
    healthy = True

    def do_GET(self) -> None:
        if Upstream.healthy:
            body = b"ok"
            self.send_response(200)
        else:
            body = b"overloaded"
            self.send_response(503)
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet, please
        pass


def retry_after_of(response: tuple[int, dict[str, str]]) -> bool | float:
    """Tell the breaker which answers are failures: 5xx, with the upstream's Retry-After if any."""
    status, headers = response
    if status < 500:
        return False
    value = headers.get("Retry-After", "")
    return float(value) if value.isdigit() else True


def main() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    started = time.monotonic()

    breaker = CircuitBreaker(
        "upstream",
        trip=ConsecutiveFailures(3),
        backoff=Backoff(initial=0.5, multiplier=2.0, maximum=4.0, jitter=0.1),
        failure_result=retry_after_of,
        rng=42,  # a fixed seed: the same jitter on every run
    )
    breaker.subscribe(
        lambda b, old, new: print(f"{time.monotonic() - started:6.2f}s   {old} -> {new}")
    )

    @breaker
    def fetch() -> tuple[int, dict[str, str]]:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return reply.status, dict(reply.headers)
        except urllib.error.HTTPError as error:  # a 5xx is an answer: failure_result judges it
            return error.code, dict(error.headers)

    def call(label: str) -> None:
        t0 = time.perf_counter()
        try:
            status, _ = fetch()
            outcome = f"HTTP {status}"
        except CircuitOpenError as error:
            outcome = f"rejected, retry after {error.retry_after:.2f}s"
        took = (time.perf_counter() - t0) * 1e6
        print(f"{time.monotonic() - started:6.2f}s {label:<10} {outcome:<32} {took:9.0f} us")

    for _ in range(3):
        call("healthy")
    Upstream.healthy = False
    for _ in range(6):
        call("failing")
    wait = breaker.statistics().retry_after or 0.0
    time.sleep(wait)
    call("probe")  # still failing: open again
    print(f"          open again: the next probe in {breaker.statistics().retry_after:.2f}s")
    Upstream.healthy = True
    time.sleep(breaker.statistics().retry_after or 0.0)
    call("probe")
    call("recovered")
    stats = breaker.statistics()
    print(
        f"state={stats.state} successes={stats.successes} failures={stats.failures} "
        f"rejected={stats.rejected}"
    )
    server.shutdown()
    server.server_close()
    return 0 if stats.state == "closed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
