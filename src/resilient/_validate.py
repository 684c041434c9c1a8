"""Checks for constructor options: one place that says "name, accepted range, got value".

Bad configuration raises at construction, naming the parameter: `TypeError` for the wrong kind
of value (a bool is never a number here), `ValueError` for a value out of range, infinity and NaN
included.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from collections.abc import Callable


__all__ = ["at_least", "check_int", "check_number", "in_range"]


def check_number(name: str, value: object, accepted: str, ok: Callable[[float], bool]) -> float:
    """Return *value* as a float if it is a finite real number that *ok* accepts.

    Raises:
        TypeError: *value* is not an int or a float (a bool is refused too).
        ValueError: *value* is not finite, or *ok* refuses it; the message names *accepted*.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"{name} must be {accepted}, got {value!r}"
        raise TypeError(msg)
    if not math.isfinite(value) or not ok(value):
        msg = f"{name} must be {accepted}, got {value!r}"
        raise ValueError(msg)
    return float(value)


def check_int(name: str, value: object, accepted: str, ok: Callable[[int], bool]) -> int:
    """Return *value* if it is an int (not a bool) that *ok* accepts; like `check_number`."""
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be {accepted}, got {value!r}"
        raise TypeError(msg)
    if not ok(value):
        msg = f"{name} must be {accepted}, got {value!r}"
        raise ValueError(msg)
    return value


def at_least(name: str, value: object, minimum: int, extra: str = "") -> int:
    """Return *value* if it is an int >= *minimum*; *extra* is added to the accepted range."""
    accepted = f"an int >= {minimum}{' ' + extra if extra else ''}"
    return check_int(name, value, accepted, lambda v: v >= minimum)


def in_range(
    name: str, value: object, low: float, high: float = math.inf, *, open_low: bool = False
) -> float:
    """Return *value* as a float if it is a number in [*low*, *high*] (or (*low*, *high*])."""
    accepted = f"a number {'>' if open_low else '>='} {low}" + (
        f" and <= {high}" if high < math.inf else ""
    )
    if open_low:
        return check_number(name, value, accepted, lambda v: low < v <= high)
    return check_number(name, value, accepted, lambda v: low <= v <= high)
