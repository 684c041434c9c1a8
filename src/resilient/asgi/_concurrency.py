"""`ConcurrencyLimitMiddleware`: at most N requests in the app; the rest wait briefly or get 503."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resilient._errors import RejectedError
from resilient._wrap import Policy
from resilient.asgi._policy import Exempting, admit, exempt_paths, is_exempt, reject


if TYPE_CHECKING:
    from collections.abc import Iterable

    from resilient.asgi._types import ASGIApp, Receive, Scope, Send


__all__ = ["ConcurrencyLimitMiddleware"]


class ConcurrencyLimitMiddleware(Exempting):
    """Cap the requests in flight with a `ConcurrencyLimit` or an `AdaptiveConcurrencyLimit`.

    Args:
        app: the ASGI app to protect.
        limit: the limit to enter for each HTTP request. It may be shared with other middleware or
            decorated functions; its wait queue and `max_wait` decide who waits and who is turned
            away.
        exempt: path prefixes that bypass the limit (health checks, metrics).

    A rejected request gets `503 Service Unavailable` with `Retry-After` (the limit's estimate,
    at least 1 s), before the app sees it. WebSocket, lifespan and unknown scopes pass through
    untouched: a long-lived connection would hold a permit for its whole life (refuse new
    websockets under overload with `LoadSheddingMiddleware`).
    """

    __slots__ = ("_exempt", "app", "limit")

    def __init__(self, app: ASGIApp, /, *, limit: Policy[Any], exempt: Iterable[str] = ()) -> None:
        if not isinstance(limit, Policy):
            msg = f"limit must be a ConcurrencyLimit or AdaptiveConcurrencyLimit, got {limit!r}"
            raise TypeError(msg)
        self.app = app
        self.limit = limit
        self._exempt = exempt_paths(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_exempt(scope, self._exempt):
            await self.app(scope, receive, send)
            return
        limit = self.limit
        try:
            token = await admit(limit)
        except RejectedError as error:
            await reject(scope, send, error)
            return
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            limit._exit_error(token, exc)
            raise
        limit._exit_ok(token, None)

    def __repr__(self) -> str:
        return f"ConcurrencyLimitMiddleware(limit={self.limit!r})"
