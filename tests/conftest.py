"""Shared fixtures: every async test runs on asyncio and on trio."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from resilient.metrics import set_default_sink
from resilient.testing import FakeClock


if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each `@pytest.mark.anyio` test once per backend."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def clock() -> FakeClock:
    """A fresh fake clock at t=0 that jumps when slept on."""
    return FakeClock()


@pytest.fixture(autouse=True)
def _reset_default_sink() -> Iterator[None]:
    """Leave the process-wide default sink as each test found it."""
    yield
    set_default_sink(None)
