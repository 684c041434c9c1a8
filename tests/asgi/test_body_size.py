"""BodySizeLimitMiddleware over raw ASGI: too large, lying, stalling and trickling bodies."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient.asgi import BodySizeLimitMiddleware
from resilient.asgi._body_size import parse_content_length
from resilient.asgi._respond import respond, retry_after_header
from resilient.metrics import REQUEST_BODY_REJECTED, InMemorySink


sys.path.insert(0, str(Path(__file__).parent.parent))

from helpers.asgi import Client, chunks, http_scope, reading_app


def length(value: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-length", value)]


@pytest.mark.anyio
async def test_a_body_within_the_limit_reaches_the_app() -> None:
    seen: list[bytes] = []
    mw = BodySizeLimitMiddleware(reading_app(seen), max_body_size=10)
    client = Client(chunks(b"12345", b"67890"))
    await mw(http_scope(headers=length(b"10")), client.receive, client.send)
    assert (client.status, client.body) == (200, b"10")
    assert seen == [b"12345", b"67890"]


@pytest.mark.anyio
async def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    sink = InMemorySink()
    called: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(True)

    mw = BodySizeLimitMiddleware(app, max_body_size=10, sink=sink)
    client = Client(chunks(b"x" * 11))
    await mw(http_scope(headers=length(b"11")), client.receive, client.send)
    assert client.status == 413
    assert client.headers[b"connection"] == b"close"
    assert client.headers[b"content-length"] == str(len(client.body)).encode()
    assert client.received == 0  # not a byte read: uvicorn never sends 100 Continue
    assert called == []
    assert sink.total(REQUEST_BODY_REJECTED, {"reason": "too_large"}) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        length(b"+5"),
        length(b"-5"),
        length(b"5_0"),
        length(b" "),
        length(b""),
        length("\u0665".encode()),  # an Arabic-Indic digit five: int() would accept it
        length(b"1" * 20),
        length(b"5, 6"),
        [(b"content-length", b"5"), (b"content-length", b"6")],
        [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")],
    ],
)
async def test_invalid_or_conflicting_lengths_get_400(headers: list[tuple[bytes, bytes]]) -> None:
    sink = InMemorySink()
    mw = BodySizeLimitMiddleware(reading_app(), max_body_size=100, sink=sink)
    client = Client(chunks(b"hello"))
    await mw(http_scope(headers=headers), client.receive, client.send)
    assert client.status == 400
    assert client.headers[b"connection"] == b"close"
    assert sink.total(REQUEST_BODY_REJECTED, {"reason": "invalid_length"}) == 1


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], None),
        (length(b"0"), 0),
        (length(b"42"), 42),
        (length(b" 42 "), 42),
        (length(b"42, 42"), 42),
        ([(b"content-length", b"42"), (b"content-length", b"42")], 42),
        ([(b"Content-Length", b"7")], 7),
    ],
)
def test_valid_lengths_parse(headers: list[tuple[bytes, bytes]], expected: int | None) -> None:
    assert parse_content_length(http_scope(headers=headers)) == expected


@given(st.binary(max_size=25))
def test_the_parser_never_crashes_and_accepts_only_digits(value: bytes) -> None:
    parsed = parse_content_length(http_scope(headers=length(value)))
    stripped = value.strip(b" \t")
    if stripped.isdigit() and len(stripped) <= 19:
        assert parsed == int(stripped)
    elif b"," not in value:
        assert parsed == -1


@pytest.mark.anyio
async def test_a_streamed_body_is_cut_at_the_limit_without_buffering() -> None:
    seen: list[bytes] = []
    sink = InMemorySink()
    mw = BodySizeLimitMiddleware(reading_app(seen), max_body_size=10, sink=sink)
    client = Client(chunks(b"123456", b"789012", b"never read"))
    await mw(http_scope(), client.receive, client.send)  # chunked: no content-length
    assert client.status == 413
    assert client.headers[b"connection"] == b"close"
    assert seen == [b"123456"]  # the app never got the chunk that crossed the limit
    assert client.received == 2
    assert sink.total(REQUEST_BODY_REJECTED, {"reason": "too_large"}) == 1


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=12),
    limit=st.integers(min_value=0, max_value=200),
)
def test_rejected_exactly_when_the_running_total_passes_the_limit(
    sizes: list[int], limit: int
) -> None:
    seen: list[bytes] = []
    mw = BodySizeLimitMiddleware(reading_app(seen), max_body_size=limit)
    client = Client(chunks(*(b"x" * n for n in sizes)))
    anyio.run(mw, http_scope(), client.receive, client.send)
    if sum(sizes) > limit:
        assert client.status == 413
        assert sum(len(s) for s in seen) <= limit  # nothing past the limit reached the app
    else:
        assert (client.status, client.body) == (200, str(sum(sizes)).encode())


@pytest.mark.anyio
async def test_an_app_that_swallows_the_rejection_is_answered_for() -> None:
    async def stubborn(scope: Any, receive: Any, send: Any) -> None:
        try:
            while (await receive()).get("more_body"):
                pass
        except Exception:
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b"oops"})

    mw = BodySizeLimitMiddleware(stubborn, max_body_size=3)
    client = Client(chunks(b"ab", b"cd"))
    await mw(http_scope(), client.receive, client.send)
    assert client.status == 413
    assert b"oops" not in client.body


@pytest.mark.anyio
async def test_a_rejection_in_a_task_group_is_still_answered() -> None:
    async def grouped(scope: Any, receive: Any, send: Any) -> None:
        async def read() -> None:
            while (await receive()).get("more_body"):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)

    mw = BodySizeLimitMiddleware(grouped, max_body_size=3)
    client = Client(chunks(b"ab", b"cd"))
    await mw(http_scope(), client.receive, client.send)
    assert client.status == 413


@pytest.mark.anyio
async def test_after_the_response_started_the_rest_is_dropped() -> None:
    async def echo(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                message = await receive()
                await send(
                    {"type": "http.response.body", "body": message["body"], "more_body": True}
                )
        except Exception:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    mw = BodySizeLimitMiddleware(echo, max_body_size=4)
    client = Client(chunks(b"abc", b"def", b"ghi"))
    await mw(http_scope(), client.receive, client.send)
    assert client.status == 200
    assert client.body == b"abc"
    # The response is left unfinished: the server closes the connection.
    assert client.sent[-1].get("more_body") is True


@pytest.mark.anyio
async def test_a_stalled_body_gets_408() -> None:
    sink = InMemorySink()
    mw = BodySizeLimitMiddleware(reading_app(), chunk_timeout=0.05, min_rate=None, sink=sink)
    unlimited = BodySizeLimitMiddleware(reading_app(), chunk_timeout=None, min_rate=None)
    fine = Client(chunks(b"ab", b"cd"))
    await unlimited(http_scope(), fine.receive, fine.send)  # no time limit at all
    assert fine.status == 200
    client = Client([*chunks(b"ab", b"cd")[:1], None])  # one chunk, then silence
    with anyio.fail_after(5):
        await mw(http_scope(), client.receive, client.send)
    assert client.status == 408
    assert client.headers[b"connection"] == b"close"
    assert sink.total(REQUEST_BODY_REJECTED, {"reason": "timeout"}) == 1


@pytest.mark.anyio
async def test_a_trickling_body_gets_408_after_the_grace_period() -> None:
    trickle = [{"type": "http.request", "body": b"x", "more_body": True} for _ in range(100)]
    mw = BodySizeLimitMiddleware(reading_app(), chunk_timeout=1.0, min_rate=100.0, grace_period=0.1)
    client = Client(trickle, delay=0.02)  # 1 byte per 20 ms: 50 bytes/s, under 100
    with anyio.fail_after(5):
        await mw(http_scope(), client.receive, client.send)
    assert client.status == 408
    assert 3 <= client.received <= 25  # caught soon after the grace period


@pytest.mark.anyio
async def test_a_fast_body_is_not_timed_out_and_waiting_for_disconnect_is_free() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        # Streaming apps wait on receive() for the disconnect, past any body timeout.
        assert (await receive())["type"] == "http.disconnect"

    mw = BodySizeLimitMiddleware(app, chunk_timeout=0.01, min_rate=1e9, grace_period=0.01)
    client = Client([*chunks(b"abc", b"def"), {"type": "http.disconnect"}], delay=0.0)
    client.delay = 0
    with anyio.fail_after(5):
        await mw(http_scope(), client.receive, client.send)
    assert (client.status, client.body) == (200, b"ok")


@pytest.mark.anyio
async def test_route_prefixes_override_the_global_limit() -> None:
    routes = {"/upload": 100, "/upload/tiny": 1, "/free": None}
    mw = BodySizeLimitMiddleware(reading_app(), max_body_size=5, routes=routes)
    cases = [
        ("/upload/file", 50, 200),
        ("/upload", 50, 200),
        ("/uploads", 50, 413),
        ("/upload/tiny/x", 2, 413),
        ("/free/anything", 10_000, 200),
        ("/", 6, 413),
    ]
    for path, size, expected in cases:
        client = Client(chunks(b"x" * size))
        await mw(http_scope(path), client.receive, client.send)
        assert client.status == expected, path


@pytest.mark.anyio
async def test_a_callable_chooses_the_limit() -> None:
    mw = BodySizeLimitMiddleware(
        reading_app(), routes=lambda scope: 2 if scope["method"] == "PUT" else None
    )
    put, post = Client(chunks(b"abc")), Client(chunks(b"abc"))
    await mw(http_scope(method="PUT"), put.receive, put.send)
    await mw(http_scope(method="POST"), post.receive, post.send)
    assert (put.status, post.status) == (413, 200)


@pytest.mark.anyio
async def test_http2_gets_no_connection_header() -> None:
    mw = BodySizeLimitMiddleware(reading_app(), max_body_size=1)
    assert repr(mw) == "BodySizeLimitMiddleware(max_body_size=1)"
    client = Client(chunks(b"ab"))
    await mw(http_scope(http_version="2", headers=length(b"2")), client.receive, client.send)
    assert client.status == 413
    assert b"connection" not in client.headers


@pytest.mark.anyio
async def test_other_scopes_and_app_errors_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        if scope["type"] == "http":
            raise KeyError("app bug")

    mw = BodySizeLimitMiddleware(app)
    for kind in ("lifespan", "websocket", "webtransport"):
        await mw({"type": kind}, Client().receive, Client().send)
    with pytest.raises(KeyError):
        await mw(http_scope(), Client().receive, Client().send)
    assert seen == ["lifespan", "websocket", "webtransport", "http"]


@pytest.mark.anyio
async def test_a_client_gone_during_the_answer_is_not_an_error() -> None:
    async def gone(message: Any) -> None:
        raise ConnectionResetError

    mw = BodySizeLimitMiddleware(reading_app(), max_body_size=1)
    await mw(http_scope(headers=length(b"2")), Client().receive, gone)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_body_size": -1}, ValueError, "max_body_size must be an int >= 0"),
        ({"max_body_size": 1.5}, TypeError, "max_body_size must be an int"),
        ({"chunk_timeout": 0}, ValueError, "chunk_timeout must be a number > 0"),
        ({"min_rate": "fast"}, TypeError, "min_rate must be a number"),
        ({"grace_period": -1}, ValueError, "grace_period must be a number >= 0"),
        ({"routes": {"upload": 1}}, ValueError, "path prefixes starting with '/'"),
        ({"routes": {"/upload": -1}}, ValueError, r"routes\['/upload'\] must be an int >= 0"),
    ],
)
def test_bad_configuration_names_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        BodySizeLimitMiddleware(reading_app(), **kwargs)


@pytest.mark.anyio
async def test_reading_again_after_a_rejection_raises_again() -> None:
    attempts: list[str] = []

    async def insistent(scope: Any, receive: Any, send: Any) -> None:
        async def drain() -> None:
            try:
                while (await receive()).get("more_body"):
                    pass
            except Exception as exc:
                attempts.append(type(exc).__name__)

        await drain()
        await drain()

    mw = BodySizeLimitMiddleware(insistent, max_body_size=1)
    client = Client(chunks(b"ab", b"cd"))
    await mw(http_scope(), client.receive, client.send)
    assert attempts == ["_BodyRejected", "_BodyRejected"]
    assert client.status == 413


@pytest.mark.anyio
async def test_a_disconnect_mid_body_reaches_the_app() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "http.disconnect":
                return

    mw = BodySizeLimitMiddleware(app, max_body_size=100)
    client = Client([chunks(b"ab", b"cd")[0], {"type": "http.disconnect"}])
    await mw(http_scope(), client.receive, client.send)
    assert seen == ["http.request", "http.disconnect"]
    assert client.status is None


@pytest.mark.anyio
async def test_rate_alone_without_a_chunk_timeout() -> None:
    mw = BodySizeLimitMiddleware(
        reading_app(), chunk_timeout=None, min_rate=1000, grace_period=0.05
    )
    client = Client([chunks(b"ab", b"cd")[0], None])
    with anyio.fail_after(5):
        await mw(http_scope(), client.receive, client.send)
    assert client.status == 408


@pytest.mark.anyio
async def test_a_root_prefix_covers_every_path() -> None:
    mw = BodySizeLimitMiddleware(reading_app(), max_body_size=100, routes={"/": 2})
    client = Client(chunks(b"abc"))
    await mw(http_scope("/anything"), client.receive, client.send)
    assert client.status == 413


@pytest.mark.parametrize(
    ("seconds", "header"),
    [
        (0, b"1"),
        (0.2, b"1"),
        (1.0, b"1"),
        (1.01, b"2"),
        (30, b"30"),
        (120, b"120"),
        (120.5, b"121"),
        (86_400, b"86400"),
        (float("inf"), b"1"),
        (float("nan"), b"1"),
    ],
)
def test_retry_after_is_whole_seconds_and_at_least_one(seconds: float, header: bytes) -> None:
    assert retry_after_header(seconds) == header


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_retry_after_matches_its_rule_whatever_is_precomputed(seconds: float) -> None:
    assert retry_after_header(seconds) == str(max(1, math.ceil(seconds))).encode()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [(503, None, b"Service Unavailable\n"), (418, None, b"Error\n"), (503, b"busy", b"busy")],
)
async def test_an_early_answer_declares_its_exact_length(
    status: int, body: bytes | None, expected: bytes
) -> None:
    client = Client()
    await respond(http_scope(), client.send, status, body)
    assert client.status == status
    assert client.body == expected
    assert client.headers[b"content-length"] == str(len(expected)).encode()


@pytest.mark.anyio
async def test_each_early_answer_gets_its_own_header_list() -> None:
    # Middleware outside may add headers in place: a shared list would carry them over.
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await respond(http_scope(), send, 503)
    first = sent[0]["headers"]
    assert isinstance(first, list)
    first.append((b"x-added", b"1"))
    await respond(http_scope(), send, 503)
    assert (b"x-added", b"1") not in sent[2]["headers"]  # type: ignore[operator]


@pytest.mark.anyio
async def test_an_early_answer_can_carry_retry_after() -> None:
    client = Client()
    await respond(http_scope(), client.send, 503, retry_after=2.5)
    assert client.status == 503
    assert client.headers[b"retry-after"] == b"3"
    assert client.body == b"Service Unavailable\n"


@pytest.mark.anyio
async def test_a_request_that_cannot_have_a_body_is_passed_straight_through() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(receive)

    mw = BodySizeLimitMiddleware(app, max_body_size=0)
    client = Client()
    await mw(http_scope(method="GET"), client.receive, client.send)
    await mw(http_scope(headers=length(b"0")), client.receive, client.send)
    assert seen == [client.receive, client.receive]  # not wrapped: nothing to count or time
    await mw(http_scope(method="GET", http_version="2"), client.receive, client.send)
    assert seen[-1] is not client.receive  # HTTP/2 may stream a body without a length
