"""Metrics: one small sink protocol, the catalog of every metric, and four sinks.

```python
from resilient.metrics import OTelSink, set_default_sink

set_default_sink(OTelSink())  # every policy now reports to OpenTelemetry
```

See `docs/metrics.md` for the catalog and for writing a sink of your own.
"""

from __future__ import annotations

from resilient.metrics._catalog import (
    CATALOG,
    CIRCUIT_BREAKER_CALLS,
    CIRCUIT_BREAKER_STATE,
    CIRCUIT_BREAKER_TRANSITIONS,
    CONCURRENCY_LIMIT_ACTIVE,
    CONCURRENCY_LIMIT_LIMIT,
    CONCURRENCY_LIMIT_QUEUED,
    CONCURRENCY_LIMIT_WAIT,
    EVENT_LOOP_DELAY,
    EVENT_LOOP_STALLS,
    LOAD_SHEDDING_SHED,
    NAME,
    OFFLOAD_DURATION,
    REQUEST_BODY_REJECTED,
)
from resilient.metrics._logging import LoggingSink
from resilient.metrics._memory import InMemorySink
from resilient.metrics._otel import OTelSink
from resilient.metrics._sink import (
    Attributes,
    Measurement,
    Metric,
    MetricKind,
    MetricsSink,
    NoopSink,
    collect,
    get_default_sink,
    set_default_sink,
)


__all__ = [
    "CATALOG",
    "CIRCUIT_BREAKER_CALLS",
    "CIRCUIT_BREAKER_STATE",
    "CIRCUIT_BREAKER_TRANSITIONS",
    "CONCURRENCY_LIMIT_ACTIVE",
    "CONCURRENCY_LIMIT_LIMIT",
    "CONCURRENCY_LIMIT_QUEUED",
    "CONCURRENCY_LIMIT_WAIT",
    "EVENT_LOOP_DELAY",
    "EVENT_LOOP_STALLS",
    "LOAD_SHEDDING_SHED",
    "NAME",
    "OFFLOAD_DURATION",
    "REQUEST_BODY_REJECTED",
    "Attributes",
    "InMemorySink",
    "LoggingSink",
    "Measurement",
    "Metric",
    "MetricKind",
    "MetricsSink",
    "NoopSink",
    "OTelSink",
    "collect",
    "get_default_sink",
    "set_default_sink",
]
