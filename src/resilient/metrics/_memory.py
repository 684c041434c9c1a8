"""`InMemorySink`: keeps what it is given, for debugging and as the test double."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from resilient.metrics._sink import Measurement, Metric, collect


if TYPE_CHECKING:
    from collections.abc import Mapping


__all__ = ["InMemorySink"]


class InMemorySink:
    """A sink that stores pushed measurements in a list and pulls observed ones on demand.

    The query helpers take a `Metric` (or its name) and an optional attribute filter; a measurement
    matches when it carries every given attribute with the given value.

    >>> from resilient.metrics import InMemorySink
    >>> sink = InMemorySink()
    >>> sink.records
    []
    """

    __slots__ = ("_lock", "records")

    def __init__(self) -> None:
        self.records: list[Measurement] = []
        """Pushed measurements, oldest first."""
        self._lock = threading.Lock()

    def record(self, metric: Metric, value: float, attributes: Mapping[str, str]) -> None:
        """Store one pushed measurement."""
        measurement = Measurement(metric, value, dict(attributes))
        with self._lock:
            self.records.append(measurement)

    def collect(self) -> list[Measurement]:
        """Return the observed metrics, now, of every source that reports to this sink."""
        return collect(self)

    def measurements(
        self, metric: Metric | str | None = None, attributes: Mapping[str, str] | None = None
    ) -> list[Measurement]:
        """Return pushed measurements followed by the observed ones, filtered."""
        with self._lock:
            everything = [*self.records, *self.collect()]
        return [m for m in everything if _matches(m, metric, attributes)]

    def values(
        self, metric: Metric | str, attributes: Mapping[str, str] | None = None
    ) -> list[float]:
        """Return the values of *metric* that match *attributes*, pushed first."""
        return [m.value for m in self.measurements(metric, attributes)]

    def total(self, metric: Metric | str, attributes: Mapping[str, str] | None = None) -> float:
        """Return the sum of the matching values (a counter's count, across attribute sets)."""
        return sum(self.values(metric, attributes))

    def last(
        self, metric: Metric | str, attributes: Mapping[str, str] | None = None
    ) -> float | None:
        """Return the most recent matching value, or `None` if there is none."""
        values = self.values(metric, attributes)
        return values[-1] if values else None

    def clear(self) -> None:
        """Forget every pushed measurement (observed ones live in their sources)."""
        with self._lock:
            self.records.clear()

    def __repr__(self) -> str:
        return f"InMemorySink(records={len(self.records)})"


def _matches(
    m: Measurement, metric: Metric | str | None, attributes: Mapping[str, str] | None
) -> bool:
    if metric is not None and m.metric is not metric and m.metric.name != metric:
        return False
    return attributes is None or all(m.attributes.get(k) == v for k, v in attributes.items())
