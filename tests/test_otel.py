"""OTelSink against the OpenTelemetry SDK's in-memory reader (a test-only dependency)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from resilient.metrics import (
    CIRCUIT_BREAKER_CALLS,
    CIRCUIT_BREAKER_STATE,
    CIRCUIT_BREAKER_TRANSITIONS,
    CONCURRENCY_LIMIT_ACTIVE,
    EVENT_LOOP_DELAY,
    Measurement,
    Metric,
    OTelSink,
)
from resilient.metrics._sink import Instrumented


if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator


class Source(Instrumented):
    __slots__ = ("active", "calls")

    def __init__(self, sink: OTelSink) -> None:
        super().__init__("svc", sink)
        self.calls = 0
        self.active = 0

    def _observe(self) -> Iterable[Measurement]:
        name = {"resilient.name": "svc"}
        return [
            Measurement(CIRCUIT_BREAKER_CALLS, self.calls, {**name, "outcome": "success"}),
            Measurement(CIRCUIT_BREAKER_STATE, 1, {**name, "state": "closed"}),
            Measurement(CONCURRENCY_LIMIT_ACTIVE, self.active, name),
        ]


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def sink(reader: InMemoryMetricReader) -> Iterator[OTelSink]:
    provider = MeterProvider(metric_readers=[reader])
    yield OTelSink(meter_provider=provider)
    provider.shutdown()


def exported(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Map metric name to [(attributes, point)] from one collection."""
    data = reader.get_metrics_data()
    result: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    if data is None:  # nothing at all was recorded or observed
        return result
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "resilient"
            for metric in scope.metrics:
                result[metric.name] = [
                    (dict(p.attributes or {}), p) for p in metric.data.data_points
                ]
    return result


def test_pushed_counter_and_histogram(sink: OTelSink, reader: InMemoryMetricReader) -> None:
    sink.record(CIRCUIT_BREAKER_TRANSITIONS, 1, {"from": "closed", "to": "open"})
    sink.record(CIRCUIT_BREAKER_TRANSITIONS, 1, {"from": "closed", "to": "open"})
    sink.record(EVENT_LOOP_DELAY, 0.004, {})
    sink.record(EVENT_LOOP_DELAY, 0.2, {})
    points = exported(reader)
    [(attrs, counter)] = points["resilient.circuit_breaker.transitions"]
    assert attrs == {"from": "closed", "to": "open"}
    assert counter.value == 2
    [(_, histogram)] = points["resilient.event_loop.delay"]
    assert histogram.count == 2
    assert histogram.sum == pytest.approx(0.204)
    assert list(histogram.explicit_bounds) == list(EVENT_LOOP_DELAY.buckets or ())


def test_observed_metrics_are_pulled_at_export(
    sink: OTelSink, reader: InMemoryMetricReader
) -> None:
    source = Source(sink)
    source.calls = 41
    source.active = 3
    points = exported(reader)
    [(attrs, calls)] = points["resilient.circuit_breaker.calls"]
    assert attrs == {"resilient.name": "svc", "outcome": "success"}
    assert calls.value == 41
    assert points["resilient.circuit_breaker.state"][0][1].value == 1
    assert points["resilient.concurrency_limit.active"][0][1].value == 3
    source.calls = 42
    assert exported(reader)["resilient.circuit_breaker.calls"][0][1].value == 42


def test_pushing_an_observed_metric_is_ignored(
    sink: OTelSink, reader: InMemoryMetricReader
) -> None:
    sink.record(CIRCUIT_BREAKER_CALLS, 5, {"outcome": "success"})
    assert "resilient.circuit_breaker.calls" not in exported(reader)


@pytest.mark.parametrize("kind", ["counter", "up_down_counter", "gauge", "histogram"])
def test_metrics_outside_the_catalog_get_an_instrument(
    sink: OTelSink, reader: InMemoryMetricReader, kind: Any
) -> None:
    custom = Metric(f"app.custom.{kind}", kind, "1", "A user metric.")
    sink.record(custom, 2, {"k": "v"})
    sink.record(custom, 3, {"k": "v"})
    [(attrs, point)] = exported(reader)[custom.name]
    assert attrs == {"k": "v"}
    expected = {"counter": 5, "up_down_counter": 5, "gauge": 3}
    if kind == "histogram":
        assert point.sum == 5
    else:
        assert point.value == expected[kind]


@pytest.mark.parametrize("kind", ["counter", "up_down_counter", "gauge"])
def test_observed_metrics_outside_the_catalog(
    sink: OTelSink, reader: InMemoryMetricReader, kind: Any
) -> None:
    custom = Metric(f"app.observed.{kind}", kind, "1", "A user metric.", observed=True)

    class Custom(Instrumented):
        __slots__ = ()

        def _observe(self) -> Iterable[Measurement]:
            return [Measurement(custom, 7, {})]

    source = Custom("c", sink)
    sink.record(custom, 1, {})  # creates the observable instrument; the push itself is ignored
    assert exported(reader)[custom.name][0][1].value == 7
    del source


def test_meter_provider_is_validated() -> None:
    with pytest.raises(TypeError, match="meter_provider must be"):
        OTelSink(meter_provider="global")  # type: ignore[arg-type]


def test_without_an_sdk_everything_is_a_no_op() -> None:
    sink = OTelSink()  # the API's proxy provider: nothing installed globally in this test run
    sink.record(CIRCUIT_BREAKER_TRANSITIONS, 1, {"to": "open"})
    sink.record(EVENT_LOOP_DELAY, 0.1, {})
    assert repr(sink) == "OTelSink()"
