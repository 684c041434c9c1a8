"""resilient: keep a service usable when a dependency fails, traffic bursts or the loop blocks.

Policies are decorators and context managers (`@policy`, `with policy:`, `async with policy:`)
for sync and async code, on asyncio and trio. Metrics go to one pluggable sink
(`resilient.metrics`); test helpers live in `resilient.testing`.
"""

from __future__ import annotations

from resilient._adaptive import AdaptiveConcurrencyLimit
from resilient._backoff import Backoff
from resilient._breaker import CircuitBreaker, CircuitState
from resilient._breaker_family import CircuitBreakerFamily
from resilient._breaker_stats import CircuitBreakerStatistics
from resilient._clock import Clock, SystemClock
from resilient._concurrency import ConcurrencyLimit
from resilient._errors import (
    CircuitOpenError,
    ConcurrencyLimitError,
    RejectedError,
    ResilientError,
    WorkerCrashedError,
)
from resilient._limit_parts import ConcurrencyLimitStatistics
from resilient._loop import LoopMonitor, LoopStatistics
from resilient._offload import offload
from resilient._stall import Stall
from resilient._trip import ConsecutiveFailures, FailureRate, HealthSignal


__all__ = [
    "AdaptiveConcurrencyLimit",
    "Backoff",
    "CircuitBreaker",
    "CircuitBreakerFamily",
    "CircuitBreakerStatistics",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "ConcurrencyLimit",
    "ConcurrencyLimitError",
    "ConcurrencyLimitStatistics",
    "ConsecutiveFailures",
    "FailureRate",
    "HealthSignal",
    "LoopMonitor",
    "LoopStatistics",
    "RejectedError",
    "ResilientError",
    "Stall",
    "SystemClock",
    "WorkerCrashedError",
    "offload",
]


def __getattr__(name: str) -> str:
    # A lazy __version__ read from the installed metadata (stamina's way): one source of truth.
    if name != "__version__":
        msg = f"module 'resilient' has no attribute {name!r}"
        raise AttributeError(msg)
    from importlib.metadata import version  # noqa: PLC0415 - only when asked

    return version("resilient-middleware")
