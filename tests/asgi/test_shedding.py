"""LoadSheddingMiddleware: shed in proportion to pressure, by priority; run the loop monitor."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from resilient import AdaptiveConcurrencyLimit, CircuitBreaker, ConcurrencyLimit, LoopMonitor
from resilient.asgi import (
    ConcurrencyLimitMiddleware,
    LoadSheddingMiddleware,
    StatusEndpoint,
    protect,
    status_snapshot,
)
from resilient.asgi._policy import REJECTED
from resilient.asgi._shedding import delay_pressure
from resilient.metrics import LOAD_SHEDDING_SHED
from resilient.testing import capture_metrics


sys.path.insert(0, str(Path(__file__).parent.parent))

from helpers.asgi import Client, chunks, http_scope


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def block(seconds: float) -> None:
    """Block the event loop, as a careless handler would."""
    time.sleep(seconds)


class Pressure:
    """A settable signal."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


def shedder(pressure: Pressure, **options: Any) -> LoadSheddingMiddleware:
    return LoadSheddingMiddleware(
        ok_app, delay_low=None, signals={"test": pressure}, rng=random.Random(7), **options
    )


async def statuses(mw: Any, n: int, **scope: Any) -> list[int | None]:
    results = []
    for _ in range(n):
        client = Client(chunks(b""))
        await mw(http_scope(method="GET", **scope), client.receive, client.send)
        results.append(client.status)
    return results


@pytest.mark.anyio
async def test_no_pressure_sheds_nothing_full_pressure_sheds_everything() -> None:
    pressure = Pressure(0.0)
    mw = shedder(pressure)
    assert set(await statuses(mw, 50)) == {200}
    pressure.value = 5.0  # clamped to 1
    client = Client(chunks(b""))
    scope = http_scope(method="GET")
    await mw(scope, client.receive, client.send)
    assert client.status == 503
    assert client.headers[b"retry-after"] in (b"1", b"2")
    assert scope[REJECTED] == "load_shedding"
    assert set(await statuses(mw, 50)) == {503}
    assert mw.shed_counts() == {"test": 51}


@pytest.mark.anyio
async def test_shedding_follows_the_pressure_curve() -> None:
    mw = shedder(Pressure(0.3))
    results = await statuses(mw, 2000)
    shed = results.count(503) / len(results)
    assert 0.25 < shed < 0.35


@pytest.mark.anyio
async def test_priority_moves_the_curve() -> None:
    pressure = Pressure(0.5)
    important = shedder(pressure, priority=lambda scope: 1.0 if scope["path"] == "/pay" else 0.6)
    assert set(await statuses(important, 200, path="/pay")) == {200}
    assert set(await statuses(important, 200, path="/browse")) == {200}  # 0.5 < priority 0.6
    pressure.value = 0.8  # above 0.6: half of the remaining range
    browse = await statuses(important, 2000, path="/browse")
    assert 0.4 < browse.count(503) / len(browse) < 0.6
    pressure.value = 1.0
    assert set(await statuses(important, 100, path="/pay")) == {200}  # priority 1: never shed


@pytest.mark.anyio
async def test_exempt_paths_and_other_scopes_pass() -> None:
    mw = shedder(Pressure(1.0), exempt=["/health"])
    assert set(await statuses(mw, 10, path="/health")) == {200}
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    passthrough = LoadSheddingMiddleware(app, delay_low=None, signals={"x": Pressure(1.0)})
    await passthrough({"type": "webtransport"}, Client().receive, Client().send)
    assert seen == ["webtransport"]  # websockets are shed: see test_websocket.py


@pytest.mark.anyio
async def test_a_shed_upload_says_connection_close() -> None:
    mw = shedder(Pressure(1.0))
    client = Client(chunks(b"body"))
    await mw(http_scope(headers=[(b"content-length", b"4")]), client.receive, client.send)
    assert client.status == 503
    assert client.headers[b"connection"] == b"close"


@pytest.mark.anyio
async def test_shed_counts_are_pulled_metrics() -> None:
    with capture_metrics() as sink:
        mw = shedder(Pressure(1.0), name="edge")
        await statuses(mw, 3)
        assert sink.total(LOAD_SHEDDING_SHED, {"signal": "test"}) == 3


def test_delay_pressure_is_linear_between_low_and_high() -> None:
    class Monitor:
        current_delay = 0.0

    monitor = Monitor()
    pressure = delay_pressure(monitor, 0.05, 0.25)  # type: ignore[arg-type]
    readings = []
    for delay in (0.0, 0.05, 0.15, 0.25, 1.0):
        monitor.current_delay = delay
        readings.append(round(pressure(), 6))
    assert readings == [-0.25, 0.0, 0.5, 1.0, 4.75]  # clamped by the middleware


@pytest.mark.anyio
async def test_a_blocked_loop_raises_the_pressure_while_it_is_blocked() -> None:
    monitor = LoopMonitor(interval=0.01, stall_threshold=1.0)
    mw = LoadSheddingMiddleware(ok_app, monitor=monitor, delay_low=0.05, delay_high=0.1)
    await statuses(mw, 1)  # the first request starts the monitor
    assert monitor.running
    await anyio.sleep(0.05)
    readings: list[float] = []

    def look() -> None:
        time.sleep(0.2)
        readings.append(mw.pressure()[0])

    watcher = threading.Thread(target=look)
    watcher.start()
    block(0.3)
    watcher.join()
    await anyio.sleep(0.05)
    assert readings == [1.0]
    assert mw.pressure() == (0.0, None)
    monitor.stop()


@pytest.mark.anyio
async def test_the_owned_monitor_follows_the_lifespan() -> None:
    mw = LoadSheddingMiddleware(ok_app)
    assert mw.monitor is not None
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []
    running: list[bool] = []

    async def receive() -> dict[str, Any]:
        assert mw.monitor is not None
        running.append(mw.monitor.running)
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await mw({"type": "lifespan"}, receive, send)
    assert running == [False, True]  # started on startup ...
    assert not mw.monitor.running  # ... and stopped on shutdown
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_a_monitor_left_on_a_finished_loop_is_restarted_on_the_next() -> None:
    monitor = LoopMonitor(interval=1.0, stall_threshold=2.0)
    mw = LoadSheddingMiddleware(ok_app, monitor=monitor)

    async def one_request() -> list[int | None]:
        return await statuses(mw, 1)

    assert anyio.run(one_request) == [200]  # starts the monitor on this loop; never stopped
    assert anyio.run(one_request, backend="trio") == [200]  # a new loop: restarted there
    monitor.stop()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"delay_low": 0.3, "delay_high": 0.2}, ValueError, "delay_high must be a number > 0.3"),
        ({"delay_low": "0"}, TypeError, "delay_low must be a number"),
        ({"signals": {"x": 1}}, TypeError, "signals must map names to callables"),
        ({"priority": 3}, TypeError, "priority must be a callable"),
        ({"retry_after": -1}, ValueError, "retry_after must be a number >= 0"),
        ({"retry_after": "1"}, TypeError, "retry_after must be a number"),
        ({"delay_low": None, "monitor": "m"}, TypeError, "monitor must be a LoopMonitor"),
    ],
)
def test_bad_configuration_names_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        LoadSheddingMiddleware(ok_app, **kwargs)


@pytest.mark.anyio
async def test_the_status_endpoint_reports_every_policy() -> None:
    breaker = CircuitBreaker("status-breaker")
    limit = ConcurrencyLimit(3, name="status-limit")
    mw = shedder(Pressure(1.0), name="status-shedder")
    await statuses(mw, 2)
    async with LoopMonitor(name="status-loop", interval=0.01) as monitor:
        await anyio.sleep(0.05)
        client = Client(chunks(b""))
        await StatusEndpoint()(http_scope(method="GET"), client.receive, client.send)
    snapshot = json.loads(client.body)
    assert client.headers[b"content-type"] == b"application/json"
    by_name = {
        section: {entry["name"]: entry for entry in entries}
        for section, entries in snapshot.items()
    }
    assert by_name["circuit_breakers"]["status-breaker"]["state"] == "closed"
    assert by_name["concurrency_limits"]["status-limit"]["limit"] == 3
    assert by_name["load_shedding"]["status-shedder"]["shed"] == {"test": 2}
    loop = by_name["event_loops"]["status-loop"]
    assert loop["samples"] >= 1
    assert loop["recent_stalls"] == []
    assert status_snapshot().keys() == snapshot.keys()
    del breaker, limit, monitor


@pytest.mark.anyio
async def test_the_status_endpoint_answers_only_reads() -> None:
    client = Client(chunks(b""))
    await StatusEndpoint()(http_scope(method="POST"), client.receive, client.send)
    assert client.status == 405
    await StatusEndpoint()({"type": "websocket"}, Client().receive, Client().send)
    lifespan = Client([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    await StatusEndpoint()({"type": "lifespan"}, lifespan.receive, lifespan.send)
    assert [m["type"] for m in lifespan.sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


@pytest.mark.anyio
async def test_stalls_show_in_the_status(anyio_backend: str) -> None:
    name = f"stalled-loop-{anyio_backend}"
    async with LoopMonitor(name=name, interval=0.01, stall_threshold=0.03):
        await anyio.sleep(0.03)
        block(0.1)
        await anyio.sleep(0.03)
        [loop] = [e for e in status_snapshot()["event_loops"] if e["name"] == name]
    assert loop["recent_stalls"][0]["kind"] == "blocked"
    assert loop["recent_stalls"][0]["where"].startswith(f"block ({__file__}:")


@pytest.mark.anyio
async def test_protect_stacks_the_defaults_around_a_starlette_app() -> None:
    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    async def upload(request: Any) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    app = protect(
        Starlette(routes=[Route("/", hello), Route("/upload", upload, methods=["POST"])]),
        max_body_size=10,
        status_path="/_status",
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/")).text == "hello"
        assert (await client.post("/upload", content=b"12345")).text == "5"
        assert (await client.post("/upload", content=b"x" * 11)).status_code == 413
        status = await client.get("/_status")
    assert status.status_code == 200
    assert {"circuit_breakers", "concurrency_limits", "event_loops", "load_shedding"} <= set(
        status.json()
    )


def test_protects_default_limit_treats_overflow_as_overload() -> None:
    node: Any = protect(ok_app, max_body_size=None)
    while not isinstance(node, ConcurrencyLimitMiddleware):
        node = node.app
    limit = node.limit
    assert isinstance(limit, AdaptiveConcurrencyLimit)
    overload_tolerance = limit._controller._overload_tolerance
    assert (limit.order, limit.max_wait, overload_tolerance) == ("adaptive", 0.075, 1.15)


@pytest.mark.anyio
async def test_protect_rejects_past_its_limit_but_not_health_checks() -> None:
    gate = anyio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] != "/healthz":
            await gate.wait()
        await ok_app(scope, receive, send)

    app = protect(slow, limit=ConcurrencyLimit(1, max_waiting=0))
    results: dict[str, list[int | None]] = {"/": [], "/healthz": []}

    async def one(path: str) -> None:
        results[path] += await statuses(app, 1, path=path)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "/")
        await anyio.wait_all_tasks_blocked()
        await one("/")  # the limit is full: rejected at once
        await one("/healthz")  # exempt
        gate.set()
    assert sorted(results["/"], key=str) == [200, 503]
    assert results["/healthz"] == [200]


def test_protect_checks_its_status_path() -> None:
    with pytest.raises(ValueError, match="status_path must be a path"):
        protect(ok_app, status_path="status")


@pytest.mark.anyio
async def test_lifespan_messages_pass_untouched_with_a_given_monitor() -> None:
    monitor = LoopMonitor()
    mw = LoadSheddingMiddleware(ok_app, monitor=monitor)
    assert repr(mw) == "LoadSheddingMiddleware(signals=[event_loop.delay])"
    lifespan = Client([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    await mw({"type": "lifespan"}, lifespan.receive, lifespan.send)
    assert not monitor.running  # not ours: lifespan does not start it; the first request will
    assert len(lifespan.sent) == 2
