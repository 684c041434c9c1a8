"""The sink protocol, the default sink, pulled sources, and the in-memory and logging sinks."""

from __future__ import annotations

import gc
import logging
import threading
from typing import TYPE_CHECKING

import pytest

from resilient.metrics import (
    CATALOG,
    CIRCUIT_BREAKER_CALLS,
    CIRCUIT_BREAKER_TRANSITIONS,
    EVENT_LOOP_DELAY,
    InMemorySink,
    LoggingSink,
    Measurement,
    Metric,
    MetricsSink,
    NoopSink,
    collect,
    get_default_sink,
    set_default_sink,
)
from resilient.metrics._sink import Instrumented
from resilient.testing import capture_metrics


if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


class Counting(Instrumented):
    """A source with one observed counter and one pushed event."""

    __slots__ = ("calls",)

    def __init__(self, name: str | None = None, sink: MetricsSink | None = None) -> None:
        super().__init__(name, sink)
        self.calls = 0

    def call(self) -> None:
        self.calls += 1

    def transition(self) -> None:
        self._emit(
            CIRCUIT_BREAKER_TRANSITIONS, 1, {"resilient.name": self.name or "", "to": "open"}
        )

    def _observe(self) -> Iterable[Measurement]:
        return [Measurement(CIRCUIT_BREAKER_CALLS, self.calls, {"resilient.name": self.name or ""})]


class ThreeLineSink:
    def record(self, metric: Metric, value: float, attributes: Mapping[str, str]) -> None:
        self.last = (metric, value, dict(attributes))


def test_a_three_line_class_is_a_sink() -> None:
    sink = ThreeLineSink()
    assert isinstance(sink, MetricsSink)
    source = Counting("a", sink)
    source.transition()
    assert sink.last == (CIRCUIT_BREAKER_TRANSITIONS, 1, {"resilient.name": "a", "to": "open"})
    assert source.sink is sink


def test_default_sink_is_noop_and_can_be_swapped_and_restored() -> None:
    assert isinstance(get_default_sink(), NoopSink)
    memory = InMemorySink()
    previous = set_default_sink(memory)
    assert isinstance(previous, NoopSink)
    assert get_default_sink() is memory
    assert set_default_sink(None) is memory
    assert isinstance(get_default_sink(), NoopSink)
    assert repr(get_default_sink()) == "NoopSink()"


def test_the_default_is_resolved_when_a_metric_is_emitted() -> None:
    source = Counting("late")  # created before any sink is installed
    source.transition()  # goes to the no-op sink
    with capture_metrics() as sink:
        source.transition()
        assert source.sink is sink
    source.transition()
    assert sink.total(CIRCUIT_BREAKER_TRANSITIONS) == 1


@pytest.mark.parametrize("bad", [object(), "sink", 3])
def test_non_sinks_are_refused(bad: object) -> None:
    with pytest.raises(TypeError, match="record"):
        set_default_sink(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sink must have a record"):
        Counting("x", bad)  # type: ignore[arg-type]


def test_source_name_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="name must be a str"):
        Counting(42)  # type: ignore[arg-type]


def test_collect_pulls_from_live_sources_by_sink() -> None:
    mine, other = InMemorySink(), InMemorySink()
    a, b, c = Counting("a", mine), Counting("b", other), Counting("c")
    a.call()
    b.call()
    b.call()
    assert [(m.value, m.attributes["resilient.name"]) for m in collect(mine)] == [(1, "a")]
    assert mine.total(CIRCUIT_BREAKER_CALLS) == 1
    assert other.total(CIRCUIT_BREAKER_CALLS, {"resilient.name": "b"}) == 2
    with capture_metrics() as captured:
        c.call()
        assert captured.total(CIRCUIT_BREAKER_CALLS) == 1  # c reports to the default now
    names = {m.attributes["resilient.name"] for m in collect()}
    assert {"a", "b", "c"} <= names


def test_a_source_observes_nothing_by_default() -> None:
    sink = InMemorySink()
    source = Instrumented("plain", sink)
    assert list(source._observe()) == []
    assert sink.collect() == []


def test_dead_sources_are_forgotten() -> None:
    sink = InMemorySink()
    source = Counting("gone", sink)
    source.call()
    assert sink.total(CIRCUIT_BREAKER_CALLS) == 1
    del source
    gc.collect()
    assert sink.collect() == []


def test_in_memory_queries() -> None:
    sink = InMemorySink()
    sink.record(EVENT_LOOP_DELAY, 0.01, {})
    sink.record(EVENT_LOOP_DELAY, 0.03, {})
    sink.record(CIRCUIT_BREAKER_TRANSITIONS, 1, {"from": "closed", "to": "open"})
    assert sink.values(EVENT_LOOP_DELAY) == [0.01, 0.03]
    assert sink.values("resilient.event_loop.delay") == [0.01, 0.03]
    assert sink.last(EVENT_LOOP_DELAY) == 0.03
    assert sink.last(CIRCUIT_BREAKER_CALLS) is None
    assert sink.total(CIRCUIT_BREAKER_TRANSITIONS, {"to": "open"}) == 1
    assert sink.total(CIRCUIT_BREAKER_TRANSITIONS, {"to": "closed"}) == 0
    assert len(sink.measurements()) == 3
    assert repr(sink) == "InMemorySink(records=3)"
    sink.clear()
    assert sink.records == []


def test_in_memory_sink_copies_attributes() -> None:
    sink = InMemorySink()
    attributes = {"kind": "blocked"}
    sink.record(EVENT_LOOP_DELAY, 1, attributes)
    attributes["kind"] = "starved"
    assert sink.records[0].attributes == {"kind": "blocked"}


def test_in_memory_sink_is_thread_safe() -> None:
    sink = InMemorySink()

    def push() -> None:
        for _ in range(5_000):
            sink.record(EVENT_LOOP_DELAY, 1, {})

    threads = [threading.Thread(target=push) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sink.total(EVENT_LOOP_DELAY) == 40_000


def test_logging_sink_logs_structured_records(caplog: pytest.LogCaptureFixture) -> None:
    sink = LoggingSink()
    with caplog.at_level(logging.INFO, logger="resilient.metrics"):
        sink.record(CIRCUIT_BREAKER_TRANSITIONS, 1, {"from": "closed", "to": "open"})
        sink.record(EVENT_LOOP_DELAY, 0.0125, {})
    first, second = caplog.records
    assert (
        first.getMessage()
        == "resilient.circuit_breaker.transitions 1 {'from': 'closed', 'to': 'open'}"
    )
    assert first.metric == "resilient.circuit_breaker.transitions"  # type: ignore[attr-defined]
    assert first.attributes == {"from": "closed", "to": "open"}  # type: ignore[attr-defined]
    assert first.unit == "{transition}"  # type: ignore[attr-defined]
    assert second.getMessage() == "resilient.event_loop.delay 0.0125s {}"
    assert second.value == 0.0125  # type: ignore[attr-defined]


def test_logging_sink_respects_its_level(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.quiet")
    sink = LoggingSink(logger, level=logging.DEBUG)
    with caplog.at_level(logging.INFO, logger="test.quiet"):
        sink.record(EVENT_LOOP_DELAY, 1, {})
    assert caplog.records == []
    assert repr(sink) == "LoggingSink(logger='test.quiet', level=DEBUG)"


def test_logging_sink_logs_collected_values(caplog: pytest.LogCaptureFixture) -> None:
    sink = LoggingSink()
    source = Counting("db", sink)
    source.call()
    with caplog.at_level(logging.INFO, logger="resilient.metrics"):
        sink.log_collected()
    assert [r.getMessage() for r in caplog.records] == [
        "resilient.circuit_breaker.calls 1 {'resilient.name': 'db'}"
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"logger": "resilient"}, "logger must be"), ({"level": "INFO"}, "level must be")],
)
def test_logging_sink_validates(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        LoggingSink(**kwargs)  # type: ignore[arg-type]


def test_catalog_is_consistent() -> None:
    names = [m.name for m in CATALOG]
    assert len(names) == len(set(names))
    for metric in CATALOG:
        assert metric.name.startswith("resilient.")
        assert not metric.name.endswith("_total")
        assert metric.kind in {"counter", "up_down_counter", "histogram", "gauge"}
        assert metric.description.endswith(".")
        assert (metric.kind == "histogram") == (metric.buckets is not None)
        if metric.kind == "histogram":
            assert metric.unit == "s"
            assert not metric.observed  # histograms are pushed: there is no observable histogram
        assert repr(metric) == f"Metric({metric.name!r})"
