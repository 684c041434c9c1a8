"""Reading an `itertools.count` without advancing it: the lock-free counters' one shared helper."""

from __future__ import annotations

from typing import TYPE_CHECKING


if TYPE_CHECKING:
    import itertools


__all__ = ["count_value"]


def count_value(counter: itertools.count[int]) -> int:
    """Return how many times `next()` was called on *counter* (started at 0), leaving it alone.

    The only portable way to read an `itertools.count` is its repr, `"count(42)"`.
    """
    return int(repr(counter)[6:-1])
