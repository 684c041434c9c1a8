"""ASGI apps for the real-server tests, importable by a server in another process.

Each factory takes the path of an events file (or reads it from `$RESILIENT_TEST_EVENTS`, which is
how granian's `--factory` calls it) and returns a middleware-wrapped app. The inner app appends one
JSON line per thing it sees (a call, the body read so far, lifespan startup and shutdown), so a
test can tell from outside the server's process what reached the app.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import anyio

from resilient import ConcurrencyLimit
from resilient.asgi import BodySizeLimitMiddleware, LoadSheddingMiddleware, protect


EVENTS = "RESILIENT_TEST_EVENTS"
LIMIT = 64 * 1024
"""The body size limit of `body_limited()`."""
HOLD_TIMEOUT = 10.0


def events_path(events: Path | str | None) -> Path:
    return Path(events if events is not None else os.environ[EVENTS])


def read_events(events: Path) -> list[dict[str, Any]]:
    """The events the app recorded so far, oldest first."""
    if not events.exists():
        return []
    return [json.loads(line) for line in events.read_text().splitlines() if line]


class Recorder:
    """The inner app: records what reaches it, reads the whole body, answers with its size.

    `/hold` waits (up to 10 s) until the file `<events>.release` exists before answering, so that
    a test can keep a request in flight across processes. `/early` starts its (chunked) response
    before it reads the body.
    """

    def __init__(self, events: Path) -> None:
        self.events = events
        self.shedder: LoadSheddingMiddleware | None = None

    def record(self, event: str, **fields: Any) -> None:
        with self.events.open("a") as file:
            file.write(json.dumps({"event": event, **fields}) + "\n")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        path = scope["path"]
        self.record("call", path=path)
        if path == "/early":
            await send({"type": "http.response.start", "status": 200, "headers": []})
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            received += len(message.get("body", b""))
            self.record("body", path=path, received=received)
            if not message.get("more_body", False):
                break
        if path == "/hold":
            self.record("holding", path=path)
            release = self.events.with_suffix(".release")
            deadline = time.monotonic() + HOLD_TIMEOUT
            while not release.exists() and time.monotonic() < deadline:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        text = str(received).encode()
        if path != "/early":
            headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(text))]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": text})

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            monitor = self.shedder.monitor if self.shedder is not None else None
            running = monitor.running if monitor is not None else None
            if message["type"] == "lifespan.startup":
                self.record("startup", monitor_running=running)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.record("shutdown", monitor_running=running)
                await send({"type": "lifespan.shutdown.complete"})
                return


def body_limited(events: Path | str | None = None) -> BodySizeLimitMiddleware:
    """`BodySizeLimitMiddleware` (64 KiB; 0.3 s per chunk; at least 200 B/s after 0.6 s)."""
    return BodySizeLimitMiddleware(
        Recorder(events_path(events)),
        max_body_size=LIMIT,
        chunk_timeout=0.3,
        min_rate=200,
        grace_period=0.6,
    )


def protected(events: Path | str | None = None) -> Any:
    """`protect()` with `ConcurrencyLimit(1, max_wait=0)`.

    Shedding starts at 5 s of loop delay, so a busy test machine never sheds.
    """
    recorder = Recorder(events_path(events))
    stack = protect(recorder, limit=ConcurrencyLimit(1, max_wait=0), delay_low=5.0, delay_high=10.0)
    recorder.shedder = shedder_of(stack)
    return stack


def shedder_of(stack: Any) -> LoadSheddingMiddleware:
    """The `LoadSheddingMiddleware` layer of a middleware stack."""
    layer = stack
    while not isinstance(layer, LoadSheddingMiddleware):
        layer = layer.app
    return layer
