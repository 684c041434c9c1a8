"""`LoggingSink`: measurements as stdlib log records with structured `extra` fields."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from resilient.metrics._sink import Metric, collect


if TYPE_CHECKING:
    from collections.abc import Mapping


__all__ = ["LoggingSink"]


class LoggingSink:
    """A sink that logs each pushed measurement (events: transitions, stalls, rejections).

    Each record carries `metric`, `value`, `unit` and `attributes` in its `extra`, for structured
    log handlers. Observed metrics (per-call counts) are not logged one by one; call
    `log_collected()` from a periodic job to log their current values.

    Args:
        logger: the logger to use; default `logging.getLogger("resilient.metrics")`.
        level: the level of each record; default `logging.INFO`.
    """

    __slots__ = ("level", "logger")

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        if logger is not None and not isinstance(logger, logging.Logger):
            msg = f"logger must be a logging.Logger or None, got {logger!r}"
            raise TypeError(msg)
        if not isinstance(level, int) or isinstance(level, bool):
            msg = f"level must be a logging level (an int), got {level!r}"
            raise TypeError(msg)
        self.logger = logging.getLogger("resilient.metrics") if logger is None else logger
        self.level = level

    def record(self, metric: Metric, value: float, attributes: Mapping[str, str]) -> None:
        """Log one measurement."""
        if not self.logger.isEnabledFor(self.level):
            return
        self.logger.log(
            self.level,
            "%s %s%s %s",
            metric.name,
            _format(value),
            _unit(metric.unit),
            dict(attributes),
            extra={
                "metric": metric.name,
                "value": value,
                "unit": metric.unit,
                "attributes": dict(attributes),
            },
        )

    def log_collected(self) -> None:
        """Log the current value of every observed metric of the sources reporting here."""
        for m in collect(self):
            self.record(m.metric, m.value, m.attributes)

    def __repr__(self) -> str:
        return f"LoggingSink(logger={self.logger.name!r}, level={logging.getLevelName(self.level)})"


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def _unit(unit: str) -> str:
    # Annotations like {call} are for machines; "1" is no unit at all.
    return "" if unit == "1" or unit.startswith("{") else unit
