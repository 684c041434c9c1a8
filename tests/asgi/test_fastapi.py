"""A FastAPI app behind `protect()`, driven in-process through `httpx.ASGITransport`.

Every test runs on asyncio and on trio. It shows that routes keep their responses (status,
headers, JSON, a sync route in the thread pool, a streamed body); that `CircuitBreakerMiddleware`
added with `app.add_middleware` counts a route's `HTTPException(500)` as a failure, but not a 404
nor a 413, and then answers 503 with `Retry-After`; that `BodySizeLimitMiddleware`'s `routes=`
lets a FastAPI upload route take more than the rest of the app, and cuts a streamed upload at
that limit; and that `protect(app, status_path=...)` serves `StatusEndpoint`'s JSON.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at run time.

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from resilient import Backoff, CircuitBreaker, ConsecutiveFailures, LoopMonitor
from resilient.asgi import ASGIApp, BodySizeLimitMiddleware, CircuitBreakerMiddleware, protect


UPLOAD_LIMIT = 4096
"""`/upload`'s own body limit; every other route takes at most 64 bytes."""


class Item(BaseModel):
    name: str
    price: float


@pytest.fixture
def names(request: pytest.FixtureRequest) -> str:
    """Names this test's policies apart from other tests' in the process-wide status."""
    return f"fastapi-{request.node.name}"


@pytest.fixture
def breaker(names: str) -> CircuitBreaker:
    return CircuitBreaker(names, trip=ConsecutiveFailures(2), backoff=Backoff(30, jitter=0))


@pytest.fixture
def monitor(names: str) -> Iterator[LoopMonitor]:
    monitor = LoopMonitor(name=names)
    yield monitor
    monitor.stop()  # started by the first request; already stopped by `client`, normally


@pytest.fixture
def seen() -> list[int]:
    """How much of its body `/upload` has read, after each chunk."""
    return []


@pytest.fixture
def app(breaker: CircuitBreaker, monitor: LoopMonitor, seen: list[int]) -> ASGIApp:
    api = FastAPI()

    @api.get("/items/{item_id}")
    def read_item(item_id: int, response: Response, q: str | None = None) -> dict[str, Any]:
        response.headers["x-item"] = str(item_id)  # a sync route: runs in the thread pool
        return {"id": item_id, "q": q}

    @api.post("/items", status_code=201)
    async def create_item(item: Item) -> Item:
        return item

    @api.get("/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for part in (b"one ", b"two ", b"three"):
                yield part

        return StreamingResponse(parts(), media_type="text/plain")

    @api.get("/fail")
    async def fail() -> None:
        raise HTTPException(status_code=500, detail="backend down")

    @api.get("/missing")
    async def missing() -> None:
        raise HTTPException(status_code=404, detail="no such thing")

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            seen.append(size)
        return {"size": size}

    @api.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    # Added last is outermost: the breaker sees the body limit's 413s, which are not failures.
    api.add_middleware(BodySizeLimitMiddleware, max_body_size=64, routes={"/upload": UPLOAD_LIMIT})
    api.add_middleware(CircuitBreakerMiddleware, breaker=breaker, exempt=["/healthz"])
    # Shedding only past 5 s of loop delay: a busy test machine must not shed these requests.
    return protect(api, monitor=monitor, delay_low=5.0, delay_high=10.0, status_path="/_status")


@pytest.fixture
async def client(app: ASGIApp, monitor: LoopMonitor) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client
    monitor.stop()  # while its loop still runs (else it reports the loop as blocked)


class Chunks(httpx.AsyncByteStream):
    """A request body of *count* chunks of *size* bytes, without a declared length.

    A class, not an async generator: an early answer leaves the body unread, and trio warns
    about an async generator garbage-collected unfinished.
    """

    def __init__(self, count: int, size: int) -> None:
        self.left, self.size = count, size

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if not self.left:
            raise StopAsyncIteration
        self.left -= 1
        return b"u" * self.size


async def post_chunks(client: httpx.AsyncClient, path: str, count: int) -> httpx.Response:
    request = client.build_request("POST", path, headers={"transfer-encoding": "chunked"})
    request.stream = Chunks(count, 1000)
    return await client.send(request)


@pytest.mark.anyio
async def test_routes_keep_their_responses(client: httpx.AsyncClient) -> None:
    response = await client.get("/items/7", params={"q": "red"})
    assert (response.status_code, response.json()) == (200, {"id": 7, "q": "red"})
    assert response.headers["x-item"] == "7"
    response = await client.post("/items", json={"name": "lamp", "price": 9.5})
    assert (response.status_code, response.json()) == (201, {"name": "lamp", "price": 9.5})
    response = await client.post("/items", json={"name": "lamp"})
    assert response.status_code == 422  # FastAPI's validation error passes untouched
    assert response.json()["detail"][0]["loc"] == ["body", "price"]
    response = await client.get("/stream")
    assert (response.status_code, response.text) == (200, "one two three")
    assert response.headers["content-type"].startswith("text/plain")
    assert (await client.get("/healthz")).json() == {"status": "ok"}


@pytest.mark.anyio
async def test_an_http_exception_500_is_a_breaker_failure(
    client: httpx.AsyncClient, breaker: CircuitBreaker
) -> None:
    assert (await client.get("/missing")).status_code == 404
    assert (await client.post("/echo", content=b"x" * 100)).status_code == 413
    assert breaker.statistics().failures == 0  # 4xx are the client's fault
    response = await client.get("/fail")
    assert (response.status_code, response.json()) == (500, {"detail": "backend down"})
    assert (breaker.state, breaker.statistics().failures) == ("closed", 1)
    assert (await client.get("/fail")).status_code == 500
    assert breaker.state == "open"
    rejected = await client.get("/items/1")
    assert (rejected.status_code, rejected.text) == (503, "Service Unavailable\n")
    assert rejected.headers["retry-after"] in ("29", "30")
    assert (await client.get("/healthz")).status_code == 200  # exempt: served while open
    statistics = breaker.statistics()
    assert (statistics.successes, statistics.failures, statistics.rejected) == (2, 2, 1)


@pytest.mark.anyio
async def test_the_upload_route_has_its_own_body_limit(
    client: httpx.AsyncClient, seen: list[int]
) -> None:
    response = await client.post("/upload", content=b"x" * UPLOAD_LIMIT)
    assert (response.status_code, response.json()) == (200, {"size": UPLOAD_LIMIT})
    assert (await client.post("/echo", content=b"x" * 64)).json() == {"size": 64}
    seen.clear()
    for path, size in (("/upload", UPLOAD_LIMIT + 1), ("/echo", 65)):
        response = await client.post(path, content=b"x" * size)  # a declared length: refused
        assert (response.status_code, response.headers["connection"]) == (413, "close")
    assert seen == []  # before the route ran
    response = await post_chunks(client, "/upload", 10)
    assert (response.status_code, response.text) == (413, "Content Too Large\n")
    assert seen == [1000, 2000, 3000, 4000]  # the 5th chunk crossed the limit: never seen
    response = await post_chunks(client, "/upload", 4)
    assert (response.status_code, response.json()) == (200, {"size": 4000})


@pytest.mark.anyio
async def test_the_status_path_serves_the_status_as_json(
    client: httpx.AsyncClient, names: str
) -> None:
    assert (await client.get("/fail")).status_code == 500  # starts the monitor; one failure
    response = await client.get("/_status")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    snapshot = json.loads(response.content)
    assert set(snapshot) == {
        "circuit_breakers",
        "concurrency_limits",
        "event_loops",
        "load_shedding",
    }
    [breaker] = [b for b in snapshot["circuit_breakers"] if b["name"] == names]
    assert (breaker["state"], breaker["failures"]) == ("closed", 1)
    [loop] = [m for m in snapshot["event_loops"] if m["name"] == names]
    assert loop["running"] is True
    assert any(entry["name"] == "protect" for entry in snapshot["load_shedding"])
    assert (await client.post("/_status")).status_code == 405
