"""Answers the middleware sends themselves: a short plain-text response, sent only once.

Every early answer (400, 408, 413, 503) goes through `respond()`, so each carries an exact
`content-length`, a whole-seconds `retry-after` when one applies, and `connection: close` when the
request body was left unread on HTTP/1.x (otherwise a keep-alive server reads the rest of the body
as the next request). A client that is already gone is not an error.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from resilient.asgi._types import Scope, Send


__all__ = ["header", "respond", "retry_after_header"]

_REASONS = {
    400: b"Bad Request",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    503: b"Service Unavailable",
}


def retry_after_header(seconds: float) -> bytes:
    """Format *seconds* as `Retry-After` delay-seconds: a whole number, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds))).encode() if math.isfinite(seconds) else b"1"


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
    text = body if body is not None else _REASONS.get(status, b"Error") + b"\n"
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(text)).encode()),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after_header(retry_after)))
    if close and scope.get("http_version", "1.1") in ("1.0", "1.1"):
        headers.append((b"connection", b"close"))
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": text, "more_body": False})
    except OSError:  # ASGI 2.4: sending to a disconnected client raises an OSError subclass
        pass


def header(scope: Scope, name: bytes) -> list[bytes]:
    """Return every value of the request header *name* (lowercase), in order."""
    return [value for key, value in scope.get("headers", ()) if key.lower() == name]
