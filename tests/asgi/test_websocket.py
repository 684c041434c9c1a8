"""WebSockets through the middleware: new handshakes shed under overload, the rest untouched."""

from __future__ import annotations

import random
import sys
import warnings
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from resilient import CircuitBreaker, ConcurrencyLimit
from resilient.asgi import (
    BodySizeLimitMiddleware,
    CircuitBreakerMiddleware,
    ConcurrencyLimitMiddleware,
    LoadSheddingMiddleware,
    protect,
)
from resilient.asgi._policy import REJECTED
from resilient.asgi._respond import deny_websocket
from resilient.metrics import LOAD_SHEDDING_SHED
from resilient.testing import capture_metrics


sys.path.insert(0, str(Path(__file__).parent.parent))

from helpers.asgi import Client, chunks, http_scope, websocket_scope
from helpers.server import serve


with warnings.catch_warnings():
    # Starlette 1.10 prefers httpx2 for its TestClient and warns when it falls back to httpx.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient, WebSocketDenialResponse


CONNECT = {"type": "websocket.connect"}
DISCONNECT = {"type": "websocket.disconnect", "code": 1000}


class Pressure:
    """A settable signal."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    """Accepts a websocket and echoes every message (any type) until the client leaves."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept", "subprotocol": None, "headers": [(b"x-app", b"1")]})
    while (message := await receive())["type"] != "websocket.disconnect":
        await send({**message, "type": message["type"].replace("receive", "send")})


async def never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the app must not see a shed handshake")


def shedder(app: Any, pressure: float | Pressure = 1.0, **options: Any) -> LoadSheddingMiddleware:
    signal = pressure if isinstance(pressure, Pressure) else Pressure(pressure)
    return LoadSheddingMiddleware(
        app, delay_low=None, signals={"test": signal}, rng=random.Random(7), **options
    )


def conversation() -> list[dict[str, Any]]:
    return [
        CONNECT,
        {"type": "websocket.receive", "text": "hello"},
        {"type": "websocket.receive", "bytes": b"\x00\xff"},
        {"type": "websocket.receive", "text": "", "x-extra": "kept"},
        DISCONNECT,
    ]


ECHOED = [
    {"type": "websocket.accept", "subprotocol": None, "headers": [(b"x-app", b"1")]},
    {"type": "websocket.send", "text": "hello"},
    {"type": "websocket.send", "bytes": b"\x00\xff"},
    {"type": "websocket.send", "text": "", "x-extra": "kept"},
]


# Raw ASGI: the denial


@pytest.mark.anyio
async def test_a_shed_handshake_gets_503_with_retry_after_when_the_server_can_send_it() -> None:
    with capture_metrics() as sink:
        mw = shedder(never_called, name="edge")
        client = Client([CONNECT])
        scope = websocket_scope()
        await mw(scope, client.receive, client.send)
        assert sink.total(LOAD_SHEDDING_SHED, {"signal": "test"}) == 1
    assert client.received == 1  # waited for websocket.connect, read nothing more
    start, body = client.sent
    assert start["type"] == "websocket.http.response.start"
    assert start["status"] == 503
    headers = dict(start["headers"])
    assert headers[b"retry-after"] in (b"1", b"2")  # whole seconds, jittered
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert b"connection" not in headers
    assert body == {
        "type": "websocket.http.response.body",
        "body": b"Service Unavailable\n",
        "more_body": False,
    }
    assert headers[b"content-length"] == str(len(body["body"])).encode()
    assert mw.shed_counts() == {"test": 1}  # counted with the shed HTTP requests
    assert scope[REJECTED] == "edge"


@pytest.mark.anyio
async def test_a_shed_handshake_is_closed_with_1013_when_the_server_cannot_send_a_response() -> (
    None
):
    mw = shedder(never_called)
    client = Client([CONNECT])
    await mw(websocket_scope(denial_response=False), client.receive, client.send)
    assert client.sent == [{"type": "websocket.close", "code": 1013}]
    scope = websocket_scope()
    del scope["extensions"]  # an older server: no extensions key at all
    client = Client([CONNECT])
    await mw(scope, client.receive, client.send)
    assert client.sent == [{"type": "websocket.close", "code": 1013}]
    assert mw.shed_counts() == {"test": 2}


@pytest.mark.anyio
async def test_the_denial_waits_for_websocket_connect() -> None:
    client = Client([CONNECT])
    seen_before: list[list[Any]] = []

    async def receive() -> dict[str, Any]:
        seen_before.append(list(client.sent))
        await anyio.sleep(0.01)
        return await client.receive()

    await shedder(never_called)(websocket_scope(), receive, client.send)
    assert seen_before == [[]]  # nothing was sent before the connect arrived
    assert [m["type"] for m in client.sent] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("denial_response", [True, False])
async def test_a_client_gone_before_or_during_the_denial_is_not_an_error(
    denial_response: bool,
) -> None:
    mw = shedder(never_called)
    client = Client([DISCONNECT])
    await mw(websocket_scope(denial_response=denial_response), client.receive, client.send)
    assert client.sent == []  # gone before the handshake: nothing to answer

    async def gone(message: dict[str, Any]) -> None:
        raise ConnectionResetError  # ASGI 2.4: an OSError subclass

    client = Client([CONNECT])
    await mw(websocket_scope(denial_response=denial_response), client.receive, gone)
    assert mw.shed_counts() == {"test": 2}


@pytest.mark.anyio
async def test_deny_websocket_takes_a_status_a_body_and_a_close_code() -> None:
    client = Client([CONNECT])
    await deny_websocket(websocket_scope(), client.receive, client.send, 403, b"no\n")
    start, body = client.sent
    assert start["status"] == 403
    assert b"retry-after" not in dict(start["headers"])
    assert body["body"] == b"no\n"
    client = Client([CONNECT])
    await deny_websocket(
        websocket_scope(denial_response=False), client.receive, client.send, code=1008
    )
    assert client.sent == [{"type": "websocket.close", "code": 1008}]


# Raw ASGI: what is let through


@pytest.mark.anyio
async def test_exempt_paths_are_not_shed() -> None:
    mw = shedder(echo_app, exempt=["/ws/health"])
    client = Client(conversation())
    await mw(websocket_scope("/ws/health"), client.receive, client.send)
    assert client.sent == ECHOED
    assert mw.shed_counts() == {"test": 0}


@pytest.mark.anyio
async def test_priority_decides_for_websockets_as_for_requests() -> None:
    pressure = Pressure(0.5)
    mw = shedder(
        echo_app, pressure, priority=lambda scope: 1.0 if scope["path"] == "/live" else 0.6
    )
    for path in ("/live", "/chat"):  # 0.5 is under both priorities
        client = Client(conversation())
        await mw(websocket_scope(path), client.receive, client.send)
        assert client.sent == ECHOED
    pressure.value = 1.0
    client = Client(conversation())
    await mw(websocket_scope("/live"), client.receive, client.send)
    assert client.sent == ECHOED  # priority 1: never shed
    client = Client(conversation())
    await mw(websocket_scope("/chat"), client.receive, client.send)
    assert client.sent[0]["status"] == 503


@pytest.mark.anyio
async def test_an_accepted_connection_is_never_shed_when_the_pressure_rises() -> None:
    pressure = Pressure(0.0)
    client = Client(conversation())

    async def receive() -> dict[str, Any]:
        message = await client.receive()
        pressure.value = 1.0  # overloaded from the connect on
        return message

    await shedder(echo_app, pressure)(websocket_scope(), receive, client.send)
    assert client.sent == ECHOED


def every_middleware(app: Any) -> list[Any]:
    return [
        shedder(app, 0.0),
        ConcurrencyLimitMiddleware(app, limit=ConcurrencyLimit(1)),
        CircuitBreakerMiddleware(app, breaker=CircuitBreaker("ws")),
        BodySizeLimitMiddleware(app, max_body_size=1),
        protect(app, delay_low=10.0, delay_high=20.0),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("index", range(5), ids=["shed", "limit", "breaker", "body", "protect"])
async def test_without_shedding_every_message_is_forwarded_both_ways(index: int) -> None:
    handed: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        handed.append((scope, receive, send))
        await echo_app(scope, receive, send)

    mw = every_middleware(app)[index]
    client = Client(conversation())
    scope = websocket_scope()
    await mw(scope, client.receive, client.send)
    assert client.sent == ECHOED
    assert client.received == len(conversation())
    # Not wrapped at all: the app holds the server's own scope, receive and send.
    [(app_scope, app_receive, app_send)] = handed
    assert app_scope is scope
    assert app_receive == client.receive
    assert app_send == client.send
    stop_monitor(mw)


def stop_monitor(stack: Any) -> None:
    """Stop the loop monitor that protect() starts on the first connection."""
    while hasattr(stack, "app"):
        if isinstance(stack, LoadSheddingMiddleware) and stack.monitor is not None:
            stack.monitor.stop()
        stack = stack.app


@pytest.mark.anyio
@pytest.mark.parametrize("index", range(5), ids=["shed", "limit", "breaker", "body", "protect"])
async def test_lifespan_and_unknown_scopes_pass_untouched(index: int) -> None:
    seen: list[tuple[str, list[Any]]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        received = [await receive(), await receive()]
        seen.append((scope["type"], received))
        for message in received:
            await send({"type": message["type"] + ".complete", "x-extra": 1})

    mw = every_middleware(app)[index]
    startup = {"type": "lifespan.startup", "state": {}}
    shutdown = {"type": "lifespan.shutdown"}
    client = Client([startup, shutdown])
    await mw({"type": "lifespan", "asgi": {"version": "3.0"}}, client.receive, client.send)
    assert seen == [("lifespan", [startup, shutdown])]
    assert client.sent == [
        {"type": "lifespan.startup.complete", "x-extra": 1},
        {"type": "lifespan.shutdown.complete", "x-extra": 1},
    ]
    messages = [{"type": "webtransport.connect"}, {"type": "webtransport.datagram.receive"}]
    client = Client(messages)
    await mw({"type": "webtransport", "path": "/"}, client.receive, client.send)
    assert seen[1] == ("webtransport", messages)
    assert [m["type"] for m in client.sent] == [
        "webtransport.connect.complete",
        "webtransport.datagram.receive.complete",
    ]
    stop_monitor(mw)


@pytest.mark.anyio
async def test_an_overloaded_shedder_lets_lifespan_and_unknown_scopes_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    mw = shedder(app, 1.0)
    await mw({"type": "lifespan"}, Client().receive, Client().send)
    await mw({"type": "webtransport", "path": "/"}, Client().receive, Client().send)
    assert seen == ["lifespan", "webtransport"]
    assert mw.shed_counts() == {"test": 0}


@pytest.mark.anyio
async def test_an_open_websocket_holds_no_permit_and_an_open_breaker_does_not_refuse_it() -> None:
    gate = anyio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await gate.wait()
        await echo_app(scope, receive, send)

    limit = ConcurrencyLimit(1, max_waiting=0)
    breaker = CircuitBreaker("ws-open")
    breaker.force_open()
    capped = ConcurrencyLimitMiddleware(app, limit=limit)
    guarded = CircuitBreakerMiddleware(app, breaker=breaker)
    results: list[list[Any]] = []

    async def websocket(mw: Any) -> None:
        client = Client(conversation())
        await mw(websocket_scope(), client.receive, client.send)
        results.append(client.sent)

    async with anyio.create_task_group() as tg:
        tg.start_soon(websocket, capped)
        tg.start_soon(websocket, guarded)
        await anyio.wait_all_tasks_blocked()
        http = Client(chunks(b""))
        await capped(http_scope(method="GET"), http.receive, http.send)
        assert http.status == 200  # the open websocket holds no permit
        http = Client(chunks(b""))
        await guarded(http_scope(method="GET"), http.receive, http.send)
        assert http.status == 503  # the breaker refuses HTTP ...
        gate.set()
    assert results == [ECHOED, ECHOED]  # ... but not websockets


# End to end


def starlette_app() -> Starlette:
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:
            pass

    return Starlette(routes=[WebSocketRoute("/ws", echo)])


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_starlette_test_client_sees_the_denial_then_the_echo(backend: str) -> None:
    pressure = Pressure(1.0)
    app = shedder(starlette_app(), pressure)
    with TestClient(app, backend=backend) as client:
        with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws"):
            pass  # pragma: no cover - refused
        assert denied.value.status_code == 503
        assert denied.value.headers["retry-after"] in ("1", "2")
        assert denied.value.text == "Service Unavailable\n"
        pressure.value = 0.0
        with client.websocket_connect("/ws") as websocket:
            for text in ("one", "two", "three"):
                websocket.send_text(text)
                assert websocket.receive_text() == text
    assert app.shed_counts() == {"test": 1}


async def without_denial_extension(app: Any, scope: Any, receive: Any, send: Any) -> None:
    scope = {**scope, "extensions": {}}
    await app(scope, receive, send)


@pytest.mark.parametrize("ws", ["websockets-sansio", "wsproto"])
def test_uvicorn_refuses_the_handshake_while_overloaded_and_echoes_when_healthy(ws: str) -> None:
    pressure = Pressure(1.0)
    app = shedder(starlette_app(), pressure)

    async def old_server(scope: Any, receive: Any, send: Any) -> None:
        await without_denial_extension(app, scope, receive, send)

    with serve(app, ws=ws) as port, serve(old_server, ws=ws) as old_port:
        with pytest.raises(InvalidStatus) as denied:
            connect(f"ws://127.0.0.1:{port}/ws", proxy=None, open_timeout=5)
        response = denied.value.response
        assert response.status_code == 503
        assert response.headers["Retry-After"] in ("1", "2")
        assert response.body == b"Service Unavailable\n"
        with pytest.raises(InvalidStatus) as closed:
            connect(f"ws://127.0.0.1:{old_port}/ws", proxy=None, open_timeout=5)
        assert closed.value.response.status_code == 403  # close 1013 before accept
        pressure.value = 0.0
        with connect(f"ws://127.0.0.1:{port}/ws", proxy=None, open_timeout=5) as websocket:
            for text in ("one", "two", "three"):
                websocket.send(text)
                assert websocket.recv(timeout=5) == text
    assert app.shed_counts() == {"test": 2}
