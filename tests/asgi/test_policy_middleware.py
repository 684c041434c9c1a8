"""ConcurrencyLimitMiddleware and CircuitBreakerMiddleware: thin adapters over core policies."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from resilient import (
    Backoff,
    CircuitBreaker,
    ConcurrencyLimit,
    ConsecutiveFailures,
)
from resilient.asgi import CircuitBreakerMiddleware, ConcurrencyLimitMiddleware
from resilient.testing import FakeClock


sys.path.insert(0, str(Path(__file__).parent.parent))

from helpers.asgi import Client, chunks, http_scope


def status_app(statuses: list[int]) -> Any:
    """Answers each request with the next status from *statuses*."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        status = statuses.pop(0)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})

    return app


async def call(app: Any, path: str = "/", headers: Any = ()) -> Client:
    client = Client(chunks(b""))
    await app(http_scope(path, method="GET", headers=headers), client.receive, client.send)
    return client


@pytest.mark.anyio
async def test_the_limit_admits_up_to_its_cap_and_answers_503_past_it() -> None:
    limit = ConcurrencyLimit(2, max_waiting=0, name="api")
    gate = anyio.Event()
    inside = 0
    peak = 0

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        await gate.wait()
        inside -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    mw = ConcurrencyLimitMiddleware(slow, limit=limit)
    clients: list[Client] = []

    async def one() -> None:
        clients.append(await call(mw))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    statuses = sorted(c.status or 0 for c in clients)
    assert statuses == [200, 200, 503, 503, 503]
    assert peak == 2
    rejected = [c for c in clients if c.status == 503]
    assert all(c.headers[b"retry-after"].isdigit() for c in rejected)
    assert limit.statistics().active == 0


@pytest.mark.anyio
async def test_a_rejected_upload_says_connection_close() -> None:
    limit = ConcurrencyLimit(1, max_waiting=0)
    mw = ConcurrencyLimitMiddleware(status_app([200]), limit=limit)
    with limit:  # the only permit is taken
        client = await call(mw, headers=[(b"content-length", b"10")])
        plain = await call(mw)
    assert client.status == plain.status == 503
    assert client.headers[b"connection"] == b"close"
    assert b"connection" not in plain.headers


@pytest.mark.anyio
async def test_exempt_paths_and_other_scopes_bypass_the_limit() -> None:
    limit = ConcurrencyLimit(1, max_waiting=0)
    mw = ConcurrencyLimitMiddleware(status_app([200, 200]), limit=limit, exempt=["/health"])
    with limit:
        assert (await call(mw, "/health")).status == 200
        assert (await call(mw, "/health/deep")).status == 200
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    passthrough = ConcurrencyLimitMiddleware(app, limit=limit)
    await passthrough({"type": "lifespan"}, Client().receive, Client().send)
    await passthrough({"type": "websocket"}, Client().receive, Client().send)
    assert seen == ["lifespan", "websocket"]


@pytest.mark.anyio
async def test_app_errors_release_the_permit_and_propagate() -> None:
    limit = ConcurrencyLimit(1)

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError

    mw = ConcurrencyLimitMiddleware(broken, limit=limit)
    with pytest.raises(RuntimeError):
        await call(mw)
    assert limit.statistics().active == 0


@pytest.mark.anyio
async def test_the_breaker_opens_on_5xx_and_answers_503_with_retry_after() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "app",
        trip=ConsecutiveFailures(2),
        backoff=Backoff(initial=10, jitter=0),
        clock=clock,
    )
    mw = CircuitBreakerMiddleware(status_app([500, 502, 200, 200]), breaker=breaker)
    assert [(await call(mw)).status for _ in range(2)] == [500, 502]
    assert breaker.state == "open"
    rejected = await call(mw)
    assert rejected.status == 503
    assert rejected.headers[b"retry-after"] == b"10"
    clock.advance(10)
    assert (await call(mw)).status == 200  # the probe
    assert breaker.state == "closed"


@pytest.mark.anyio
async def test_4xx_and_custom_statuses() -> None:
    breaker = CircuitBreaker("app", trip=ConsecutiveFailures(1))
    mw = CircuitBreakerMiddleware(status_app([404, 429]), breaker=breaker)
    assert (await call(mw)).status == 404
    assert breaker.state == "closed"
    strict = CircuitBreakerMiddleware(
        status_app([429]), breaker=breaker, failure_status=lambda s: s == 429
    )
    assert (await call(strict)).status == 429
    assert breaker.state == "open"


@pytest.mark.anyio
async def test_an_inner_rejection_is_not_a_failure_of_the_app() -> None:
    breaker = CircuitBreaker("app", trip=ConsecutiveFailures(1))
    limit = ConcurrencyLimit(1, max_waiting=0)
    stack = CircuitBreakerMiddleware(
        ConcurrencyLimitMiddleware(status_app([200]), limit=limit), breaker=breaker
    )
    with limit:
        assert (await call(stack)).status == 503
    assert breaker.state == "closed"
    assert breaker.statistics().failures == 0


@pytest.mark.anyio
async def test_app_exceptions_count_and_propagate() -> None:
    breaker = CircuitBreaker("app", trip=ConsecutiveFailures(1))

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise ConnectionError

    mw = CircuitBreakerMiddleware(broken, breaker=breaker, exempt=["/health"])
    with pytest.raises(ConnectionError):
        await call(mw)
    assert breaker.state == "open"
    with pytest.raises(ConnectionError):
        await call(mw, "/health")  # exempt: goes through even while open


@pytest.mark.anyio
async def test_with_starlette_through_httpx() -> None:
    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    limit = ConcurrencyLimit(4)
    breaker = CircuitBreaker("starlette")
    app = Starlette(routes=[Route("/", hello)])
    app.add_middleware(ConcurrencyLimitMiddleware, limit=limit)
    app.add_middleware(CircuitBreakerMiddleware, breaker=breaker)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/")
    assert (response.status_code, response.text) == (200, "hello")
    assert breaker.statistics().successes == 1


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: ConcurrencyLimitMiddleware(status_app([]), limit=3), "limit must be"),  # type: ignore[arg-type]
        (lambda: CircuitBreakerMiddleware(status_app([]), breaker="b"), "breaker must be"),  # type: ignore[arg-type]
        (
            lambda: CircuitBreakerMiddleware(
                status_app([]), breaker=CircuitBreaker(), failure_status=500
            ),  # type: ignore[arg-type]
            "failure_status must be",
        ),
    ],
)
def test_bad_configuration_is_refused(factory: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        factory()


def test_exempt_must_be_path_prefixes() -> None:
    with pytest.raises(ValueError, match="exempt must hold path prefixes"):
        ConcurrencyLimitMiddleware(status_app([]), limit=ConcurrencyLimit(1), exempt=["health"])


@pytest.mark.anyio
async def test_a_request_may_wait_for_a_permit() -> None:
    limit = ConcurrencyLimit(1, max_waiting=1, max_wait=5)
    mw = ConcurrencyLimitMiddleware(status_app([200, 200]), limit=limit)
    assert repr(mw).startswith("ConcurrencyLimitMiddleware(limit=")
    results: list[int | None] = []

    async def one() -> None:
        results.append((await call(mw)).status)

    async with anyio.create_task_group() as tg:
        limit.__enter__()  # hold the permit so the request has to wait for it
        tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        assert limit.statistics().waiting == 1
        limit.__exit__(None, None, None)
    assert results == [200]


@pytest.mark.anyio
async def test_a_rejection_without_a_hint_says_retry_after_one_second() -> None:
    breaker = CircuitBreaker("app")
    breaker.force_open()  # forced open: no natural end, so no retry_after
    mw = CircuitBreakerMiddleware(status_app([]), breaker=breaker)
    assert repr(mw).startswith("CircuitBreakerMiddleware(breaker=")
    client = await call(mw)
    assert client.status == 503
    assert client.headers[b"retry-after"] == b"1"
