"""What the policy middleware share: admission through a core policy, and the 503 it answers.

A policy middleware enters its policy (a breaker, a concurrency limit) the way the decorator core
does, through the policy's hooks, so one `CircuitBreaker` or `ConcurrencyLimit` instance can guard
an inbound route and an outbound call at once. A rejection becomes `503 Service Unavailable` with a
whole-seconds `Retry-After`, and is marked in the scope so that an outer breaker middleware does
not count it as a failure of the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resilient._wrap import MUST_WAIT
from resilient.asgi._respond import respond


if TYPE_CHECKING:
    from collections.abc import Iterable

    from resilient._errors import RejectedError
    from resilient._wrap import Policy
    from resilient.asgi._types import Scope, Send


__all__ = ["REJECTED", "Exempting", "admit", "body_unread", "exempt_paths", "is_exempt", "reject"]

REJECTED = "resilient.rejected"
"""Scope key set (to the rejecting policy's name) when a resilient middleware answered 503."""


async def admit(policy: Policy[Any]) -> Any:
    """Enter *policy* for a request: return its token, or raise `RejectedError`."""
    token = policy._enter_nowait()
    if token is MUST_WAIT:
        token = await policy._enter_wait()
    return token


async def reject(scope: Scope, send: Send, error: RejectedError) -> None:
    """Answer 503 for *error*, with `Retry-After`, and mark the scope as rejected."""
    scope[REJECTED] = error.name or type(error).__name__
    retry_after = error.retry_after if error.retry_after is not None else 1.0
    await respond(scope, send, 503, retry_after=retry_after, close=body_unread(scope))


# Per-request checks below are plain loops, not `any(<generator>)`: besides the generator's own
# cost, in one measurement in the overload demo's server a generator per request made the app's
# own CPU-bound loop run about 6% slower (docs/benchmarks.md, "Overload").


def body_unread(scope: Scope) -> bool:
    """Whether the request declares a body (which an early answer leaves unread).

    One pass over the headers and nothing built: every rejection under overload asks.
    """
    for name, value in scope.get("headers", ()):
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            return True
        if lowered == b"content-length" and value.strip() not in (b"0", b""):
            return True
    return False


def exempt_paths(paths: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """Validate path prefixes that a middleware lets through untouched (health checks).

    Returns what `is_exempt` compares with: each prefix, and the same prefix ending in one '/'.
    """
    prefixes = tuple(paths)
    for prefix in prefixes:
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            msg = f"exempt must hold path prefixes starting with '/', got {prefix!r}"
            raise ValueError(msg)
    return tuple((prefix, prefix.rstrip("/") + "/") for prefix in prefixes)


class Exempting:
    """Mixin of the middleware with exempt paths: they keep `exempt_paths()`'s pairs in `_exempt`.

    `exempt` is read-only: the prefixes are prepared once, so reassigning them would be ignored.
    """

    __slots__ = ()
    _exempt: tuple[tuple[str, str], ...]

    @property
    def exempt(self) -> tuple[str, ...]:
        """The exempt path prefixes (read-only: prepared once, at construction)."""
        return tuple(prefix for prefix, _ in self._exempt)


def is_exempt(scope: Scope, matcher: tuple[tuple[str, str], ...]) -> bool:
    """Whether the request path is one of the prefixes of *matcher* (`exempt_paths`) or below."""
    if not matcher:
        return False
    path: str = scope.get("path", "")
    for exact, below in matcher:  # noqa: SIM110 - no generator, see above
        if path == exact or path.startswith(below):
            return True
    return False
