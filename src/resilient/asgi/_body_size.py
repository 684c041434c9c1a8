"""`BodySizeLimitMiddleware`: refuse request bodies that are too large, lie, stall or trickle.

- A strictly parsed `Content-Length` over the limit gets 413 before the app runs and before any
  body is read (uvicorn and granian send `100 Continue` lazily, on the first read, so such an
  upload never starts; hypercorn sends it as soon as the headers are in, and the 413 with
  `connection: close` follows at once). An invalid, negative or conflicting one gets 400.
- Bodies without a declared length (chunked, HTTP/2) are counted in the wrapped `receive`, never
  buffered, and cut at the limit: 413 if the response has not started, else the connection is
  dropped (the response is left unfinished, so the server closes it; granian, which holds the
  response headers back until the first body message, answers 500 itself when none came).
- A body that stalls longer than `chunk_timeout`, or arrives slower than `min_rate` bytes per second
  once `grace_period` has passed (slowloris; Kestrel's `MinRequestBodyDataRate`), gets 408.
- Every answer that leaves the body unread says `connection: close`.

If the app catches the rejection itself (`except Exception`) and answers, its answer is replaced by
the right one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NoReturn

import anyio

from resilient._clock import system_clock
from resilient._validate import at_least, in_range
from resilient.asgi._respond import is_http1, respond
from resilient.metrics._catalog import REQUEST_BODY_REJECTED
from resilient.metrics._sink import Instrumented


if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from resilient._clock import Clock
    from resilient.asgi._types import ASGIApp, Message, Receive, Scope, Send
    from resilient.metrics._sink import MetricsSink


__all__ = ["BodySizeLimitMiddleware", "parse_content_length"]

Reason = Literal["too_large", "invalid_length", "timeout"]
_STATUS: dict[Reason, int] = {"too_large": 413, "invalid_length": 400, "timeout": 408}
_ATTRIBUTES: dict[Reason, dict[str, str]] = {r: {"reason": r} for r in _STATUS}
_INVALID = -1
_MAX_DIGITS = 19  # 10**19 bytes is past any real body and still fits in 64 bits


class _BodyRejected(Exception):  # noqa: N818 - private sentinel, never seen by users
    """Raised from the wrapped `receive` to stop the app reading; turned into a response."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_content_length(scope: Scope) -> int | None:
    """Return the declared body length, `None` if undeclared, or -1 if invalid.

    Strict (RFC 9110 §8.6, RFC 9112 §6.3): digits only (no sign, space, underscore or non-ASCII
    digit, which `int()` would accept); repeated or comma-listed values must agree; and a
    `Transfer-Encoding` beside a `Content-Length` is a request-smuggling pattern.
    """
    return _framing(scope)[0]


def _framing(scope: Scope) -> tuple[int | None, bool]:
    """One pass over the headers: the declared length (see above) and whether it is chunked."""
    values: list[bytes] = []
    chunked = False
    for name, value in scope.get("headers", ()):
        lowered = name.lower()
        if lowered == b"content-length":
            values.append(value)
        elif lowered == b"transfer-encoding":
            chunked = True
    if not values:
        return None, chunked
    if chunked:
        return _INVALID, chunked
    lengths: set[int] = set()
    for value in values:
        for part in value.split(b","):
            digits = part.strip(b" \t")
            if not digits.isdigit() or len(digits) > _MAX_DIGITS:  # bytes.isdigit: ASCII only
                return _INVALID, chunked
            lengths.add(int(digits))
    return (lengths.pop() if len(lengths) == 1 else _INVALID), chunked


class BodySizeLimitMiddleware(Instrumented):
    """Limit request bodies by size, stall time and data rate, without buffering them.

    Args:
        app: the ASGI app to protect.
        max_body_size: the largest body in bytes (default 1 MiB, nginx's default); `None` for no
            size limit (the time limits still apply).
        routes: per-route limits: a mapping from path prefix to a limit (`None` for unlimited;
            the longest matching prefix wins), or a callable that takes the scope and returns the
            limit for that request.
        chunk_timeout: seconds the app may wait for the next piece of the body (default 30;
            `None` for no limit).
        min_rate: the slowest acceptable upload, in bytes per second, enforced once
            `grace_period` has passed (default 240, Kestrel's; `None` to disable).
        grace_period: seconds before `min_rate` applies (default 5).
        clock: times the data rate (default the system clock).
        sink: metrics sink (default: the process-wide default).
    """

    __slots__ = (
        "_clock",
        "_prefixes",
        "_route_limit",
        "app",
        "chunk_timeout",
        "grace_period",
        "max_body_size",
        "min_rate",
    )

    def __init__(
        self,
        app: ASGIApp,
        /,
        *,
        max_body_size: int | None = 1_048_576,
        routes: Mapping[str, int | None] | Callable[[Scope], int | None] | None = None,
        chunk_timeout: float | None = 30.0,
        min_rate: float | None = 240.0,
        grace_period: float = 5.0,
        clock: Clock | None = None,
        sink: MetricsSink | None = None,
    ) -> None:
        super().__init__(None, sink)
        self.app = app
        self.max_body_size = _size("max_body_size", max_body_size)
        self.chunk_timeout = _positive_or_none("chunk_timeout", chunk_timeout)
        self.min_rate = _positive_or_none("min_rate", min_rate)
        self.grace_period = in_range("grace_period", grace_period, 0.0)
        self._clock = clock or system_clock
        self._route_limit: Callable[[Scope], int | None] | None = None
        self._prefixes: list[tuple[str, int | None]] = []
        if callable(routes):
            self._route_limit = routes
        elif routes is not None:
            for prefix, limit in routes.items():
                if not isinstance(prefix, str) or not prefix.startswith("/"):
                    msg = f"routes keys must be path prefixes starting with '/', got {prefix!r}"
                    raise ValueError(msg)
                self._prefixes.append((prefix.rstrip("/"), _size(f"routes[{prefix!r}]", limit)))
            self._prefixes.sort(key=lambda item: len(item[0]), reverse=True)

    def limit_for(self, scope: Scope) -> int | None:
        """Return the body size limit for this request (`None`: unlimited)."""
        if self._route_limit is not None:
            return self._route_limit(scope)
        path: str = scope.get("path", "")
        for prefix, limit in self._prefixes:
            if path == prefix or path.startswith(prefix + "/") or not prefix:
                return limit
        return self.max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared, chunked = _framing(scope)
        if declared == _INVALID:
            await self._reject(scope, send, "invalid_length")
            return
        if declared is not None and limit is not None and declared > limit:
            await self._reject(scope, send, "too_large")
            return
        if declared == 0 or (declared is None and not chunked and is_http1(scope)):
            # No body can come (HTTP/1.x without Content-Length or Transfer-Encoding): nothing
            # to count or time, so skip the per-read timeout scope (about 5 us per request).
            await self.app(scope, receive, send)
            return
        await _Request(self, scope, receive, send, limit).run()

    async def _reject(self, scope: Scope, send: Send, reason: Reason) -> None:
        self._emit(REQUEST_BODY_REJECTED, 1, _ATTRIBUTES[reason])
        await respond(scope, send, _STATUS[reason], close=True)

    def __repr__(self) -> str:
        return f"BodySizeLimitMiddleware(max_body_size={self.max_body_size!r})"


class _Request:
    """One request's reading of its body: counts, times, and stops it when it must."""

    __slots__ = (
        "deadline_base",
        "done",
        "limit",
        "middleware",
        "receive",
        "received",
        "rejected",
        "scope",
        "send",
        "started",
    )

    def __init__(
        self,
        middleware: BodySizeLimitMiddleware,
        scope: Scope,
        receive: Receive,
        send: Send,
        limit: int | None,
    ) -> None:
        self.middleware, self.scope, self.receive, self.send = middleware, scope, receive, send
        self.limit = limit
        self.received = 0
        self.done = False  # the whole body (or a disconnect) has been received
        self.started = False  # the response has started
        self.rejected: Reason | None = None
        self.deadline_base: float | None = None  # when the app first asked for the body

    async def run(self) -> None:
        try:
            await self.middleware.app(self.scope, self.guarded_receive, self.tracking_send)
        except Exception:
            # Our sentinel, bare or in an exception group, or whatever the app raised instead
            # once its body was cut: the rejection is the answer either way.
            if self.rejected is None:
                raise
        if self.rejected is not None and not self.started:
            self.started = True
            await respond(self.scope, self.send, _STATUS[self.rejected], close=True)
        # Rejected after the response started: leave it unfinished, so the server closes the
        # connection; there is no status left to send.

    async def guarded_receive(self) -> Message:
        if self.done:
            return await self.receive()  # e.g. waiting for http.disconnect: no limits apply
        if self.rejected is not None:
            raise _BodyRejected(self.rejected)
        middleware = self.middleware
        timeout = middleware.chunk_timeout
        if middleware.min_rate is not None:
            now = middleware._clock.now()
            if self.deadline_base is None:
                self.deadline_base = now
            # With no more bytes, the rate falls below min_rate at received / min_rate seconds.
            allowed = max(middleware.grace_period, self.received / middleware.min_rate)
            left = allowed - (now - self.deadline_base)
            timeout = left if timeout is None else min(timeout, left)
        message: Message | None = None
        if timeout is None:
            message = await self.receive()
        else:
            with anyio.move_on_after(max(timeout, 0.0)):
                message = await self.receive()
            if message is None:
                self.reject("timeout")
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.limit is not None and self.received > self.limit:
                self.reject("too_large")
            if not message.get("more_body", False):
                self.done = True
        else:
            self.done = True
        return message

    def reject(self, reason: Reason) -> NoReturn:
        self.rejected = reason
        self.middleware._emit(REQUEST_BODY_REJECTED, 1, _ATTRIBUTES[reason])
        raise _BodyRejected(reason)

    async def tracking_send(self, message: Message) -> None:
        if self.rejected is not None:
            # The app caught the rejection and answers anyway: answer for it, or (if the
            # response already started) drop the rest so the connection is closed.
            if not self.started:
                self.started = True
                await respond(self.scope, self.send, _STATUS[self.rejected], close=True)
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


def _size(parameter: str, value: object) -> int | None:
    return None if value is None else at_least(parameter, value, 0, "(bytes) or None")


def _positive_or_none(parameter: str, value: object) -> float | None:
    return None if value is None else in_range(parameter, value, 0.0, open_low=True)
