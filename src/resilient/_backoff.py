"""`Backoff`: how long an open circuit waits, growing with each re-open, with jitter.

```
delay(n) = min(maximum, initial * multiplier ** (n - 1)) * U(1 - jitter, 1 + jitter)
```

*n* counts consecutive openings since the circuit was last closed (1 for the first). The jitter
spreads the probes of many processes that tripped together, so a recovering upstream is not hit by
all of them in the same instant (AWS Builders' Library, "Timeouts, retries and backoff with
jitter").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from resilient._validate import check_number


if TYPE_CHECKING:
    import random


__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """An exponential, capped and jittered wait: a frozen value, safe to share.

    Args:
        initial: the first wait, in seconds (> 0).
        multiplier: growth per consecutive opening (>= 1; 1 gives a constant wait).
        maximum: the cap before jitter, in seconds (>= initial).
        jitter: the relative spread, in [0, 1): the wait is multiplied by U(1 - jitter, 1 + jitter).

    >>> Backoff(initial=1.0, multiplier=2.0, maximum=60.0, jitter=0.0).delay(3)
    4.0
    """

    initial: float = 5.0
    multiplier: float = 2.0
    maximum: float = 300.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        check_number("initial", self.initial, "a finite number > 0", lambda v: v > 0)
        check_number("multiplier", self.multiplier, "a finite number >= 1", lambda v: v >= 1)
        check_number("maximum", self.maximum, "a finite number >= initial", lambda v: v > 0)
        if self.maximum < self.initial:
            msg = (
                f"maximum must be a finite number >= initial={self.initial!r}, got {self.maximum!r}"
            )
            raise ValueError(msg)
        check_number("jitter", self.jitter, "a number in [0, 1)", lambda v: 0 <= v < 1)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Return the wait before the *attempt*-th consecutive probe (1-based), jittered by *rng*.

        Raises:
            ValueError: *attempt* is below 1.
        """
        if attempt < 1:
            msg = f"attempt must be >= 1, got {attempt!r}"
            raise ValueError(msg)
        # Cap the exponent first: multiplier ** 2000 would overflow a float long before the cap.
        base = self.maximum
        if self.multiplier == 1 or attempt - 1 < math.log(
            self.maximum / self.initial, self.multiplier
        ):
            base = min(self.maximum, self.initial * self.multiplier ** (attempt - 1))
        if self.jitter:
            base *= rng.uniform(1 - self.jitter, 1 + self.jitter)
        return base
