"""The metrics sink protocol, the metric record type, the default sink and pulled sources.

Two ways a measurement reaches a sink:

- **pushed**: a policy calls `sink.record(metric, value, attributes)` when something happens (a
  state transition, a wait that ended, a loop-delay sample). Events are rare, so this is cheap.
- **pulled** (`Metric.observed`): per-call counts and current levels (calls by outcome, permits in
  use, the current limit) are kept by the policy anyway, for `statistics()`; a sink that wants them
  asks for them with `collect()` when it exports. Nothing is spent per call, which is how a breaker
  stays within a few hundred nanoseconds with the OpenTelemetry SDK installed (an SDK counter call
  costs about 5 us).

A sink is anything with `record()`: a three-line class will do.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias, runtime_checkable


if TYPE_CHECKING:
    from collections.abc import Iterable


__all__ = [
    "Attributes",
    "Instrumented",
    "Measurement",
    "Metric",
    "MetricKind",
    "MetricsSink",
    "NoopSink",
    "collect",
    "get_default_sink",
    "live_sources",
    "set_default_sink",
]

MetricKind = Literal["counter", "up_down_counter", "histogram", "gauge"]
Attributes: TypeAlias = Mapping[str, str]
"""Metric attributes: bounded string keys and values."""


@dataclass(frozen=True, eq=False)
class Metric:
    """One metric resilient emits: its name, kind, unit and meaning.

    Every instance lives in the catalog (`resilient.metrics.CATALOG`); compare them by identity.

    Attributes:
        name: OpenTelemetry-style dotted name, for example `resilient.circuit_breaker.calls`.
        kind: `counter`, `up_down_counter`, `histogram` or `gauge`.
        unit: UCUM unit (`s`, `{call}`, `1`).
        description: one sentence.
        attributes: the attribute keys that may accompany a value (all with bounded values).
        observed: delivered by `collect()` (pulled) rather than by `record()` (pushed).
        buckets: suggested histogram bucket boundaries, in `unit`.
    """

    name: str
    kind: MetricKind
    unit: str
    description: str
    attributes: tuple[str, ...] = ()
    observed: bool = False
    buckets: tuple[float, ...] | None = None

    def __repr__(self) -> str:
        return f"Metric({self.name!r})"


@dataclass(frozen=True)
class Measurement:
    """A value of a metric with its attributes, as pushed to a sink or returned by `collect()`.

    For pulled counters the value is cumulative since the source was created; for up-down counters
    and gauges it is the current level.
    """

    metric: Metric
    value: float
    attributes: Mapping[str, str]


@runtime_checkable
class MetricsSink(Protocol):
    """Where resilient's measurements go.

    `record` is called from the event loop and from worker threads: it must be thread-safe, must
    not block, and must not raise.
    """

    def record(self, metric: Metric, value: float, attributes: Mapping[str, str]) -> None:
        """Take one pushed measurement."""
        ...


class NoopSink:
    """The default sink: discards everything, and nothing is collected for it."""

    __slots__ = ()

    def record(self, metric: Metric, value: float, attributes: Mapping[str, str]) -> None:
        """Discard the measurement."""

    def __repr__(self) -> str:
        return "NoopSink()"


_NOOP = NoopSink()
_default_sink: MetricsSink = _NOOP
_default_lock = threading.Lock()


def get_default_sink() -> MetricsSink:
    """Return the process-wide sink used by every policy created without `sink=`."""
    return _default_sink


def set_default_sink(sink: MetricsSink | None) -> MetricsSink:
    """Make *sink* the process-wide default (`None` restores `NoopSink`); return the previous one.

    Policies resolve the default each time they emit, so this takes effect for policies that
    already exist too.

    Raises:
        TypeError: *sink* has no `record` method.
    """
    global _default_sink  # the process-wide default is the point
    new = _NOOP if sink is None else _check_sink(sink, "sink")
    with _default_lock:
        previous, _default_sink = _default_sink, new
    return previous


def _check_sink(sink: object, parameter: str) -> MetricsSink:
    if not isinstance(sink, MetricsSink):
        msg = f"{parameter} must have a record(metric, value, attributes) method, got {sink!r}"
        raise TypeError(msg)
    return sink


class Instrumented:
    """Base class of everything that emits metrics: holds `name` and `sink`, registers as a source.

    Subclasses push with `_emit()` and, for observed metrics, override `_observe()`.
    """

    __slots__ = ("__weakref__", "_sink", "name")

    def __init__(self, name: str | None, sink: MetricsSink | None) -> None:
        if name is not None and not isinstance(name, str):
            msg = f"name must be a str or None, got {name!r}"
            raise TypeError(msg)
        self.name = name
        self._sink = None if sink is None else _check_sink(sink, "sink")
        with _sources_lock:
            _sources.add(self)

    @property
    def sink(self) -> MetricsSink:
        """The sink this object reports to now (its own, or the current default)."""
        return self._sink or _default_sink

    def _emit(self, metric: Metric, value: float, attributes: Mapping[str, str]) -> None:
        (self._sink or _default_sink).record(metric, value, attributes)

    def _observe(self) -> Iterable[Measurement]:
        """Return the current values of this object's observed metrics."""
        return ()


_sources: weakref.WeakSet[Instrumented] = weakref.WeakSet()
_sources_lock = threading.Lock()


def live_sources() -> list[Instrumented]:
    """Return every live policy, monitor and middleware (for status pages)."""
    with _sources_lock:
        return list(_sources)


def collect(sink: MetricsSink | None = None) -> list[Measurement]:
    """Return the observed (pulled) metrics of every live policy, monitor and middleware.

    Args:
        sink: only sources that report to this sink (their own, or the default when they have
            none); `None` means every source.

    Call it from an exporter or a status endpoint; it never touches an event loop.
    """
    sources = live_sources()
    default = _default_sink
    measurements: list[Measurement] = []
    for source in sources:
        if sink is None or (source._sink or default) is sink:
            measurements.extend(source._observe())
    return measurements
