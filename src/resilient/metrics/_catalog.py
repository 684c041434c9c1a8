"""Every metric resilient emits, in one place: name, kind, unit, meaning, attributes.

Names follow the OpenTelemetry guidelines: a `resilient.` namespace, seconds for durations, no
`_total` suffix, unpluralized up-down counters, and attributes with bounded values only (policy
names are chosen by the user; never paths, client addresses or messages). `docs/metrics.md`
documents this table, and a test keeps the two in step.

The policy's name travels in the `resilient.name` attribute.
"""

from __future__ import annotations

from resilient.metrics._sink import Metric


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
]

NAME = "resilient.name"
"""The attribute that carries a policy's name."""

# Seconds, from a fast in-process call to a client timeout; close to OpenTelemetry's HTTP buckets
# with finer steps below 10 ms, where queue waits and loop delays live.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075,
    0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

CIRCUIT_BREAKER_CALLS = Metric(
    "resilient.circuit_breaker.calls",
    "counter",
    "{call}",
    "Calls seen by a circuit breaker, by outcome.",
    (NAME, "outcome"),
    observed=True,
)
CIRCUIT_BREAKER_STATE = Metric(
    "resilient.circuit_breaker.state",
    "gauge",
    "1",
    "1 for the state a circuit breaker is in, 0 for the others.",
    (NAME, "state"),
    observed=True,
)
CIRCUIT_BREAKER_TRANSITIONS = Metric(
    "resilient.circuit_breaker.transitions",
    "counter",
    "{transition}",
    "State changes of a circuit breaker.",
    (NAME, "from", "to"),
)
CONCURRENCY_LIMIT_ACTIVE = Metric(
    "resilient.concurrency_limit.active",
    "up_down_counter",
    "{request}",
    "Calls holding a permit of a concurrency limit.",
    (NAME,),
    observed=True,
)
CONCURRENCY_LIMIT_QUEUED = Metric(
    "resilient.concurrency_limit.queued",
    "up_down_counter",
    "{request}",
    "Calls waiting for a permit of a concurrency limit.",
    (NAME,),
    observed=True,
)
CONCURRENCY_LIMIT_WAIT = Metric(
    "resilient.concurrency_limit.wait",
    "histogram",
    "s",
    "Time a call waited for a permit, by how the wait ended.",
    (NAME, "result"),
    buckets=_LATENCY_BUCKETS,
)
CONCURRENCY_LIMIT_LIMIT = Metric(
    "resilient.concurrency_limit.limit",
    "gauge",
    "{request}",
    "The number of permits of a concurrency limit (moves when adaptive).",
    (NAME,),
    observed=True,
)
EVENT_LOOP_DELAY = Metric(
    "resilient.event_loop.delay",
    "histogram",
    "s",
    "How late the event loop ran a heartbeat callback.",
    (),
    buckets=_LATENCY_BUCKETS,
)
EVENT_LOOP_STALLS = Metric(
    "resilient.event_loop.stalls",
    "counter",
    "{stall}",
    "Times the event loop did not answer within the stall threshold.",
    ("kind",),
)
REQUEST_BODY_REJECTED = Metric(
    "resilient.request_body.rejected",
    "counter",
    "{request}",
    "Requests refused for their body, by reason.",
    ("reason",),
)
LOAD_SHEDDING_SHED = Metric(
    "resilient.load_shedding.shed",
    "counter",
    "{request}",
    "Requests answered 503 by load shedding, by the signal that was over its threshold.",
    ("signal",),
    observed=True,
)
OFFLOAD_DURATION = Metric(
    "resilient.offload.duration",
    "histogram",
    "s",
    "Duration of calls run in offload workers.",
    (NAME, "worker.kind", "error.type"),
    buckets=_LATENCY_BUCKETS,
)

CATALOG: tuple[Metric, ...] = (
    CIRCUIT_BREAKER_CALLS,
    CIRCUIT_BREAKER_STATE,
    CIRCUIT_BREAKER_TRANSITIONS,
    CONCURRENCY_LIMIT_ACTIVE,
    CONCURRENCY_LIMIT_QUEUED,
    CONCURRENCY_LIMIT_WAIT,
    CONCURRENCY_LIMIT_LIMIT,
    EVENT_LOOP_DELAY,
    EVENT_LOOP_STALLS,
    REQUEST_BODY_REJECTED,
    LOAD_SHEDDING_SHED,
    OFFLOAD_DURATION,
)
"""Every metric resilient emits."""
