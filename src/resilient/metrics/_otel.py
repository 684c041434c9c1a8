"""`OTelSink`: measurements as OpenTelemetry instruments, through `opentelemetry-api` only.

Pushed metrics go to synchronous instruments; observed metrics become observable instruments
whose callbacks pull them with `collect()` when the SDK's reader exports, so the hot path never
calls the SDK. Without an SDK installed, the API's proxy makes all of this a no-op.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics as otel

from resilient.metrics._catalog import CATALOG
from resilient.metrics._sink import Metric, collect


if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


__all__ = ["OTelSink"]

# Meter factory method per metric kind. There is no observable histogram in OpenTelemetry: the
# catalog only pushes histograms.
_SYNC = {
    "counter": "create_counter",
    "up_down_counter": "create_up_down_counter",
    "gauge": "create_gauge",
}
_OBSERVABLE = {
    "counter": "create_observable_counter",
    "up_down_counter": "create_observable_up_down_counter",
    "gauge": "create_observable_gauge",
}


class OTelSink:
    """A sink that reports to OpenTelemetry under the meter `resilient`.

    Args:
        meter_provider: the provider to use; default the global one
            (`opentelemetry.metrics.get_meter_provider()`), resolved now.

    Instruments are created once, here, for every metric in the catalog (and lazily for any other
    metric pushed to it). Observable callbacks run on the exporter's thread: they read counters the
    policies keep and never touch an event loop.
    """

    __slots__ = ("_instruments", "_lock", "_meter")

    def __init__(self, meter_provider: otel.MeterProvider | None = None) -> None:
        if meter_provider is not None and not isinstance(meter_provider, otel.MeterProvider):
            msg = f"meter_provider must be an opentelemetry MeterProvider, got {meter_provider!r}"
            raise TypeError(msg)
        from resilient import __version__  # noqa: PLC0415 - avoids an import cycle

        self._meter = otel.get_meter("resilient", __version__, meter_provider=meter_provider)
        self._lock = threading.Lock()
        self._instruments: dict[Metric, Any] = {m: self._create(m) for m in CATALOG}

    def record(self, metric: Metric, value: float, attributes: Mapping[str, str]) -> None:
        """Send one pushed measurement to its instrument."""
        instrument = self._instruments.get(metric)
        if instrument is None:
            with self._lock:
                instrument = self._instruments.get(metric)
                if instrument is None:  # pragma: no branch - else: another thread won the race
                    instrument = self._instruments[metric] = self._create(metric)
        if metric.observed:
            return  # Observable instruments are fed by collection, never by pushes.
        if metric.kind == "histogram":
            instrument.record(value, attributes)
        elif metric.kind == "gauge":
            instrument.set(value, attributes)
        else:
            instrument.add(value, attributes)

    def _create(self, metric: Metric) -> Any:
        meter, name, unit, doc = self._meter, metric.name, metric.unit, metric.description
        if metric.observed:
            create = getattr(meter, _OBSERVABLE[metric.kind])
            return create(name, [self._callback(metric)], unit, doc)
        if metric.kind == "histogram":
            buckets = list(metric.buckets) if metric.buckets else None
            return meter.create_histogram(
                name, unit, doc, explicit_bucket_boundaries_advisory=buckets
            )
        return getattr(meter, _SYNC[metric.kind])(name, unit, doc)

    def _callback(self, metric: Metric) -> Any:
        def observe(_options: otel.CallbackOptions) -> Iterable[otel.Observation]:
            return [
                otel.Observation(m.value, dict(m.attributes))
                for m in collect(self)
                if m.metric is metric
            ]

        return observe

    def __repr__(self) -> str:
        return "OTelSink()"
