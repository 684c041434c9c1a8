"""Type-checked by mypy and pyright, never executed: concurrency limits keep signatures."""

from __future__ import annotations

from typing_extensions import assert_type

from resilient import AdaptiveConcurrencyLimit, ConcurrencyLimit, ConcurrencyLimitStatistics


limit = ConcurrencyLimit(4, max_waiting=8, max_wait=0.5, order="lifo", name="db")
adaptive = AdaptiveConcurrencyLimit(initial_limit=10, max_limit=100)


@limit
async def fetch(user_id: int, *, verbose: bool = False) -> str:
    return f"{user_id}{verbose}"


@adaptive
def compute(x: float) -> float:
    return x * 2


async def use() -> None:
    assert_type(await fetch(1, verbose=True), str)
    assert_type(compute(2.0), float)
    async with limit as entered:
        assert_type(entered, ConcurrencyLimit)
    with adaptive as entered_adaptive:
        assert_type(entered_adaptive, AdaptiveConcurrencyLimit)
    assert_type(limit.statistics(), ConcurrencyLimitStatistics)
    assert_type(adaptive.limit, int)
    assert_type(limit.max_wait, "float | None")
