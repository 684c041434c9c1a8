"""Answers the middleware sends themselves: a short plain-text response, sent only once.

Every early answer (400, 408, 413, 503) goes through `respond()`, so each carries an exact
`content-length`, a whole-seconds `retry-after` when one applies, and `connection: close` when the
request body was left unread on HTTP/1.x (otherwise a keep-alive server reads the rest of the body
as the next request). A websocket handshake is refused with `deny_websocket()`: the same response,
when the server supports the WebSocket Denial Response extension, else a close before accept. A
client that is already gone is not an error.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from resilient.asgi._types import Message, Receive, Scope, Send


__all__ = ["deny_websocket", "is_http1", "respond", "retry_after_header"]

DENIAL_EXTENSION = "websocket.http.response"
TRY_AGAIN_LATER = 1013
"""The websocket close code for a server that is overloaded (RFC 6455 registry)."""

_REASONS = {
    400: b"Bad Request",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    503: b"Service Unavailable",
}


# Built once: under overload most requests get one of these answers, so what can be prepared is.
_PLAIN_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_DEFAULT_BODIES = {
    status: (reason + b"\n", (b"content-length", str(len(reason) + 1).encode()))
    for status, reason in _REASONS.items()
}
_WHOLE_SECONDS = {seconds: str(seconds).encode() for seconds in range(1, 121)}


def retry_after_header(seconds: float) -> bytes:
    """Format *seconds* as `Retry-After` delay-seconds: a whole number, rounded up, at least 1."""
    if not math.isfinite(seconds):
        return b"1"
    whole = max(1, math.ceil(seconds))
    text = _WHOLE_SECONDS.get(whole)
    return text if text is not None else str(whole).encode()


async def respond(
    scope: Scope,
    send: Send,
    status: int,
    body: bytes | None = None,
    *,
    retry_after: float | None = None,
    close: bool = False,
) -> None:
    """Send a complete plain-text response; swallow the errors of a client that went away."""
    default = _DEFAULT_BODIES.get(status) if body is None else None
    if default is not None:
        text, length = default
    else:
        text = body if body is not None else b"Error\n"
        length = (b"content-length", str(len(text)).encode())
    headers = [_PLAIN_TEXT, length]  # a new list each time: other middleware may append to it
    if retry_after is not None:
        headers.append((b"retry-after", retry_after_header(retry_after)))
    if close and is_http1(scope):
        headers.append((b"connection", b"close"))
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": text, "more_body": False})
    except OSError:  # ASGI 2.4: sending to a disconnected client raises an OSError subclass
        pass


async def deny_websocket(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int = 503,
    body: bytes | None = None,
    *,
    retry_after: float | None = None,
    code: int = TRY_AGAIN_LATER,
) -> None:
    """Refuse a websocket handshake; swallow the errors of a client that went away.

    Waits for `websocket.connect` (the handshake is answered in reply to it), then sends the
    plain-text response *status* if the server supports the `websocket.http.response` extension,
    else `websocket.close` with *code*, which a server turns into a 403 before accept.
    """
    if (await receive())["type"] == "websocket.disconnect":
        return  # gone before the handshake: nothing to refuse
    if DENIAL_EXTENSION in (scope.get("extensions") or {}):

        async def denial(message: Message) -> None:  # the same messages, prefixed "websocket."
            await send({**message, "type": f"websocket.{message['type']}"})

        await respond(scope, denial, status, body, retry_after=retry_after)
        return
    with contextlib.suppress(OSError):  # ASGI 2.4: a disconnected client raises an OSError
        await send({"type": "websocket.close", "code": code})


def is_http1(scope: Scope) -> bool:
    """Whether the request came over HTTP/1.x, where `connection: close` means something.

    Anything but "2" and "3": granian reports HTTP/1.0 as "1", not the "1.0" ASGI asks for.
    """
    return scope.get("http_version", "1.1") not in ("2", "3")
