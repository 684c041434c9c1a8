"""Raw ASGI test drivers: scripted `receive`, recording `send`, and small apps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio


Message = dict[str, Any]


def http_scope(
    path: str = "/",
    *,
    method: str = "POST",
    headers: Iterable[tuple[bytes, bytes]] = (),
    http_version: str = "1.1",
) -> dict[str, Any]:
    headers = list(headers)
    names = {name.lower() for name, _ in headers}
    if method in ("POST", "PUT", "PATCH") and not names & {b"content-length", b"transfer-encoding"}:
        # A body without a declared length: chunked, as an HTTP/1.1 client sends it.
        headers.append((b"transfer-encoding", b"chunked"))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": http_version,
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }


def websocket_scope(
    path: str = "/ws",
    *,
    denial_response: bool = True,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> dict[str, Any]:
    """A websocket scope; *denial_response*: the server supports `websocket.http.response`."""
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": list(headers),
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}} if denial_response else {},
    }


class Client:
    """Feeds scripted messages to the app and records what it sends back.

    A `None` in the script means "stall": receive() blocks until cancelled. After the script, it
    blocks as a server does until the client disconnects.
    """

    def __init__(self, messages: Iterable[Message | None] = (), *, delay: float = 0.0) -> None:
        self.script = list(messages)
        self.delay = delay
        self.sent: list[Message] = []
        self.received = 0

    async def receive(self) -> Message:
        if self.delay:
            await anyio.sleep(self.delay)
        if not self.script:
            await anyio.sleep_forever()
        message = self.script.pop(0)
        if message is None:
            await anyio.sleep_forever()
        assert message is not None
        self.received += 1
        return message

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        assert len(starts) <= 1, "more than one http.response.start"
        return starts[0]["status"] if starts else None

    @property
    def headers(self) -> dict[bytes, bytes]:
        [start] = [m for m in self.sent if m["type"] == "http.response.start"]
        return dict(start["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def chunks(*parts: bytes) -> list[Message]:
    """An HTTP body split into `http.request` messages."""
    return [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]


App = Callable[[Any, Any, Any], Awaitable[None]]


def reading_app(log: list[bytes] | None = None) -> App:
    """An app that reads the whole body, then answers 200 with its length."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if log is not None:
                log.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        text = str(len(body)).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": text})

    return app
