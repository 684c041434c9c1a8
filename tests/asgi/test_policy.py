"""The request checks the policy middleware share: exempt paths and declared bodies."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient import CircuitBreaker, ConcurrencyLimit
from resilient.asgi import (
    CircuitBreakerMiddleware,
    ConcurrencyLimitMiddleware,
    LoadSheddingMiddleware,
)
from resilient.asgi._policy import body_unread, exempt_paths, is_exempt


def reference(path: str, prefixes: tuple[str, ...]) -> bool:
    """The documented rule: the path is a prefix, or lies below one."""
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/health", True),
        ("/health/deep", True),
        ("/healthz", False),  # a prefix is a path segment, not a string prefix
        ("/api/", True),
        ("/api/users", True),
        ("/api", False),  # "/api/" is exempt, "/api" is another path
        ("/other", False),
        ("", False),
    ],
)
def test_exempt_paths_match_whole_segments(path: str, expected: bool) -> None:
    matcher = exempt_paths(["/health", "/api/"])
    assert is_exempt({"path": path}, matcher) is expected


def test_the_root_prefix_exempts_everything_and_no_prefix_nothing() -> None:
    assert is_exempt({"path": "/anything"}, exempt_paths(("/",)))
    assert not is_exempt({"path": "/anything"}, exempt_paths(()))
    assert not is_exempt({}, exempt_paths(("/health",)))  # no path in the scope


segment = st.sampled_from(["", "a", "ab", "health", "/"])
paths = st.lists(segment, max_size=4).map(lambda parts: "/" + "/".join(parts))


@given(st.lists(paths, max_size=4), paths)
def test_exempt_matches_the_documented_rule(prefixes: list[str], path: str) -> None:
    assert is_exempt({"path": path}, exempt_paths(prefixes)) == reference(path, tuple(prefixes))


@pytest.mark.parametrize(
    ("headers", "unread"),
    [
        ([], False),
        ([(b"content-length", b"0")], False),
        ([(b"content-length", b" 0 ")], False),
        ([(b"content-length", b"")], False),
        ([(b"content-length", b"12")], True),
        ([(b"content-length", b"0"), (b"content-length", b"5")], True),
        ([(b"transfer-encoding", b"chunked")], True),
    ],
)
def test_a_declared_body_is_unread(headers: list[tuple[bytes, bytes]], unread: bool) -> None:
    assert body_unread({"headers": headers}) is unread


async def _app(scope: object, receive: object, send: object) -> None:
    raise AssertionError


@pytest.mark.parametrize(
    "build",
    [
        lambda exempt: CircuitBreakerMiddleware(_app, breaker=CircuitBreaker(), exempt=exempt),
        lambda exempt: ConcurrencyLimitMiddleware(_app, limit=ConcurrencyLimit(1), exempt=exempt),
        lambda exempt: LoadSheddingMiddleware(_app, delay_low=None, exempt=exempt),
    ],
)
def test_exempt_paths_are_read_only(build: Any) -> None:
    middleware = build(iter(["/health", "/livez/"]))  # any iterable, read once
    assert middleware.exempt == ("/health", "/livez/")
    with pytest.raises(AttributeError):
        middleware.exempt = ("/other",)  # prepared at construction: changing them would be ignored
