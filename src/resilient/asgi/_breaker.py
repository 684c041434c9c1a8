"""`CircuitBreakerMiddleware`: stop sending requests to an app (or route) that keeps failing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resilient._errors import RejectedError
from resilient._wrap import Policy
from resilient.asgi._policy import REJECTED, Exempting, admit, exempt_paths, is_exempt, reject


if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from resilient.asgi._types import ASGIApp, Message, Receive, Scope, Send


__all__ = ["CircuitBreakerMiddleware", "ServerErrorResponse"]


class ServerErrorResponse(Exception):  # noqa: N818 - it is what the breaker records
    """What a breaker records when the app answers with a failure status (5xx by default)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _is_server_error(status: int) -> bool:
    return status >= 500  # noqa: PLR2004 - the 5xx class


class CircuitBreakerMiddleware(Exempting):
    """Guard an ASGI app with a `CircuitBreaker`: while it is open, answer 503 at once.

    Args:
        app: the ASGI app to protect.
        breaker: the breaker to enter for each HTTP request; it may also guard outbound calls.
        failure_status: which response statuses count as failures (default: 5xx). Exceptions
            from the app count as the breaker's `record`/`ignore` options say.
        exempt: path prefixes that bypass the breaker (health checks).

    A 503 from a resilient middleware inside this one (a shed or capped request) is a rejection,
    not a failure: it is not counted. WebSocket, lifespan and unknown scopes pass through
    untouched: a websocket has no status code to count as a failure, and a connection that lives
    for hours is not one call to time.
    """

    __slots__ = ("_exempt", "app", "breaker", "failure_status")

    def __init__(
        self,
        app: ASGIApp,
        /,
        *,
        breaker: Policy[Any],
        failure_status: Callable[[int], bool] = _is_server_error,
        exempt: Iterable[str] = (),
    ) -> None:
        if not isinstance(breaker, Policy):
            msg = f"breaker must be a CircuitBreaker, got {breaker!r}"
            raise TypeError(msg)
        if not callable(failure_status):
            msg = f"failure_status must be a callable taking a status code, got {failure_status!r}"
            raise TypeError(msg)
        self.app = app
        self.breaker = breaker
        self.failure_status = failure_status
        self._exempt = exempt_paths(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_exempt(scope, self._exempt):
            await self.app(scope, receive, send)
            return
        breaker = self.breaker
        try:
            token = await admit(breaker)
        except RejectedError as error:
            await reject(scope, send, error)
            return
        status = 0

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        except BaseException as exc:
            breaker._exit_error(token, exc)
            raise
        if scope.get(REJECTED):
            breaker._exit_error(token, RejectedError(scope[REJECTED]))  # neither: a rejection
        elif status and self.failure_status(status):
            breaker._exit_error(token, ServerErrorResponse(status))
        else:
            breaker._exit_ok(token, None)

    def __repr__(self) -> str:
        return f"CircuitBreakerMiddleware(breaker={self.breaker!r})"
