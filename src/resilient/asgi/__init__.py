"""Pure ASGI 3 middleware: thin adapters that turn resilient's core objects into HTTP answers.

Each middleware is `Middleware(app, /, *, options)` with `async __call__(scope, receive, send)`:
it works with any ASGI app and with `app.add_middleware(Middleware, **options)`. Only `http` (and,
where it makes sense, `websocket`) scopes are handled; `lifespan` and unknown scope types, and
every message type, pass through untouched.
"""

from __future__ import annotations

from resilient.asgi._body_size import BodySizeLimitMiddleware
from resilient.asgi._breaker import CircuitBreakerMiddleware, ServerErrorResponse
from resilient.asgi._concurrency import ConcurrencyLimitMiddleware
from resilient.asgi._protect import DEFAULT_EXEMPT, protect
from resilient.asgi._shedding import LoadSheddingMiddleware
from resilient.asgi._status import StatusEndpoint, status_snapshot
from resilient.asgi._types import ASGIApp, Message, Receive, Scope, Send


__all__ = [
    "DEFAULT_EXEMPT",
    "ASGIApp",
    "BodySizeLimitMiddleware",
    "CircuitBreakerMiddleware",
    "ConcurrencyLimitMiddleware",
    "LoadSheddingMiddleware",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "ServerErrorResponse",
    "StatusEndpoint",
    "protect",
    "status_snapshot",
]
