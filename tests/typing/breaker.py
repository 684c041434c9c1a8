"""Type-checked by mypy and pyright, never executed: CircuitBreaker keeps signatures and types."""

from __future__ import annotations

from typing_extensions import assert_type

from resilient import (
    Backoff,
    CircuitBreaker,
    CircuitBreakerFamily,
    CircuitBreakerStatistics,
    CircuitState,
    ConsecutiveFailures,
    FailureRate,
    HealthSignal,
)


breaker = CircuitBreaker("payments", trip=FailureRate(0.5, calls=50, min_calls=10))
simple = CircuitBreaker(trip=ConsecutiveFailures(5), backoff=Backoff(initial=1.0))
shedding = CircuitBreaker("loop", trip=HealthSignal(lambda: True, interval=0.5))


@breaker
def charge(amount: int, *, currency: str = "EUR") -> str:
    return f"{amount} {currency}"


@breaker
async def refund(amount: int) -> bool:
    return amount > 0


class Client:
    @simple
    def get(self, path: str) -> bytes:
        return path.encode()


assert_type(charge(1, currency="USD"), str)
assert_type(Client().get("/"), bytes)
assert_type(breaker.state, CircuitState)
assert_type(breaker.statistics(), CircuitBreakerStatistics)
assert_type(breaker.statistics().failure_rate, float)
assert_type(breaker.family(max_size=10), CircuitBreakerFamily)
assert_type(breaker.family()["host"], CircuitBreaker)


async def awaits() -> None:
    assert_type(await refund(3), bool)
    async with breaker:
        pass


def listener(b: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
    pass


unsubscribe = breaker.subscribe(listener)
assert_type(unsubscribe(), None)
with breaker:
    pass
