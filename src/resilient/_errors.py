"""The exceptions resilient raises, in one shallow tree.

```
Exception
└── ResilientError                 anything resilient raises on purpose
    ├── RejectedError              the call was not run; .retry_after hints when to try again
    │   ├── CircuitOpenError       a circuit breaker is open (or half-open and out of probes)
    │   └── ConcurrencyLimitError  a concurrency cap and its queue are full (or the wait expired)
    └── WorkerCrashedError         an offload worker process died during the call
```

Timeouts raise the builtin `TimeoutError`. Bad configuration raises `ValueError` or `TypeError` at
construction, naming the parameter.

Catch `RejectedError` to handle every "not now" at once: an outer circuit breaker does exactly that,
so a rejection from an inner policy is never counted as a failure of the protected call.
"""

from __future__ import annotations

from typing import TypeVar


__all__ = [
    "CircuitOpenError",
    "ConcurrencyLimitError",
    "RejectedError",
    "ResilientError",
    "WorkerCrashedError",
    "fast_rejection",
    "is_cancellation",
]

RejectedT = TypeVar("RejectedT", bound="RejectedError")


class ResilientError(Exception):
    """Base class of every exception resilient raises on purpose."""


class RejectedError(ResilientError):
    """The call was rejected without running.

    Attributes:
        name: the name of the policy that rejected the call (`None` if it has none).
        retry_after: seconds after which a retry may succeed, or `None` if unknown.

    The message is formatted only when the exception is printed: rejecting is a hot path under
    overload, and each rejection builds a fresh instance (a shared instance would grow its
    traceback without bound).
    """

    __slots__ = ("name", "retry_after")

    _what = "call rejected"

    def __init__(self, name: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(name, retry_after)
        self.name = name
        self.retry_after = retry_after

    def __str__(self) -> str:
        who = f"{self.name!r}: " if self.name is not None else ""
        hint = f"; retry after {self.retry_after:.3f}s" if self.retry_after is not None else ""
        return f"{who}{self._what}{hint}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, retry_after={self.retry_after!r})"


class CircuitOpenError(RejectedError):
    """A circuit breaker rejected the call: open, forced open, or half-open with no free probe."""

    __slots__ = ()
    _what = "circuit open"


class ConcurrencyLimitError(RejectedError):
    """A concurrency cap rejected the call: no free slot, and a full queue or an expired wait."""

    __slots__ = ()
    _what = "concurrency limit reached"


def fast_rejection(cls: type[RejectedT], name: str | None, retry_after: float | None) -> RejectedT:
    """Build a *cls* rejection the way `cls(name, retry_after)` would, about 80 ns cheaper.

    For the hot paths that reject under overload: `BaseException.__new__` sets `args` as
    `__init__` would, and the two fields are set here, skipping `RejectedError.__init__` (Python
    code with a `super()` call).
    """
    exc = cls.__new__(cls, name, retry_after)
    exc.name = name
    exc.retry_after = retry_after
    return exc


class WorkerCrashedError(ResilientError):
    """An offload worker process died while running the call; the worker has been replaced."""


def is_cancellation(exc: BaseException) -> bool:
    """Tell whether *exc* means "the caller went away" rather than "the call failed".

    Cancellation (asyncio's `CancelledError`, trio's `Cancelled`) and interpreter exits
    (`KeyboardInterrupt`, `SystemExit`, `GeneratorExit`) are neither a success nor a failure of the
    protected call: a breaker must not count them, and a limit must still release its permit. All of
    them derive from `BaseException` but not from `Exception`, which is what this checks.
    """
    return not isinstance(exc, Exception)
