"""Health-signal mode of the circuit breaker: the same state machine, driven by a callable.

With `trip=HealthSignal(healthy)`, a closed breaker asks `healthy()` on admission (at most once
per `interval`), and the first caller after the open wait asks it again instead of running a probe
call. These functions are the two places that happen; they run `healthy()` outside the lock and
apply its answer under it, only if the generation did not move meanwhile.

They are methods of `BreakerCore` in all but name, kept in their own module.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from resilient._breaker_state import CLOSED, OPEN


if TYPE_CHECKING:
    from resilient._breaker_core import BreakerCore


__all__ = ["check_signal", "signal_probe"]

_log = logging.getLogger("resilient.circuit_breaker")


def check_signal(breaker: BreakerCore, gen: int) -> None:
    """Ask the signal on a closed admission (or reuse its answer); open and reject if unhealthy."""
    if breaker._interval:
        now = breaker._now()
        if now < breaker._next_check:
            healthy = breaker._healthy
        else:
            breaker._next_check = now + breaker._interval
            healthy = breaker._healthy = _ask(breaker)
    else:
        healthy = _ask(breaker)
    if healthy:
        return
    with breaker._lock:
        now = breaker._now()
        if breaker._gen == gen:
            breaker._open(now, None)
        retry_after = breaker._open_until - now if breaker._state == OPEN else None
    breaker._announce()
    breaker._reject(retry_after)


def signal_probe(breaker: BreakerCore, gen: int, now: float) -> int:
    """Half-open check: close and admit this caller if healthy, else open again and reject."""
    healthy = _ask(breaker)
    with breaker._lock:
        if breaker._gen == gen:
            if healthy:
                breaker._attempts = 0
                breaker._to(CLOSED, now)
                breaker._healthy = True
                breaker._next_check = now + breaker._interval
            else:
                breaker._open(now, None)
        token = breaker._gen if breaker._state == CLOSED else None
        retry_after = breaker._open_until - now if breaker._state == OPEN else None
    breaker._announce()
    if token is None:
        breaker._reject(retry_after)
    return token


def _ask(breaker: BreakerCore) -> bool:
    try:
        return bool(breaker._signal())  # type: ignore[misc]
    except Exception:  # noqa: BLE001 - a broken signal must not reject traffic
        _log.exception("health signal of circuit breaker %r raised; counted as healthy", breaker)
        return True
