"""Type-checked by mypy and pyright in CI, never executed: decorated callables keep their types.

`assert_type` fails the type check (not a test run) if a decorator loses a signature.
"""

from __future__ import annotations

from typing_extensions import assert_type

from resilient import offload
from resilient._wrap import Policy
from resilient.metrics import InMemorySink, LoggingSink, Metric, MetricsSink, NoopSink, OTelSink
from resilient.testing import FakeClock, capture_metrics


class Admit(Policy[None]):
    def _enter(self) -> None:
        return None

    def _exit_ok(self, token: None, result: object) -> None:
        pass

    def _exit_error(self, token: None, exc: BaseException) -> None:
        pass


policy = Admit()


@policy
def add(x: int, y: int = 1) -> int:
    return x + y


@policy
async def fetch(url: str, *, timeout: float = 1.0) -> bytes:
    return url.encode()


assert_type(add(1, y=2), int)


async def awaits() -> None:
    assert_type(await fetch("u", timeout=2.0), bytes)
    assert_type(await Client().amethod(1), list[int])


class Client:
    @policy
    def method(self, n: int) -> str:
        return str(n)

    @policy
    async def amethod(self, n: int) -> list[int]:
        return [n]

    @policy
    @classmethod
    def build(cls, n: int) -> Client:
        return cls()

    @classmethod
    @policy
    def build_inner(cls, n: int) -> Client:
        return cls()

    @policy
    @staticmethod
    def helper(s: str) -> bytes:
        return s.encode()


client = Client()
assert_type(client.method(1), str)
assert_type(Client.build(1), Client)
assert_type(Client.build_inner(1), Client)
assert_type(Client.helper("x"), bytes)

# Wrong arguments are still caught through the decorator.
add("one")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]

with policy as entered:
    assert_type(entered, Admit)


async def contexts() -> None:
    async with policy as entered_async:
        assert_type(entered_async, Admit)


def sinks(metric: Metric) -> None:
    chosen: list[MetricsSink] = [NoopSink(), InMemorySink(), LoggingSink(), OTelSink()]
    for sink in chosen:
        sink.record(metric, 1.0, {"k": "v"})
    with capture_metrics() as captured:
        assert_type(captured, InMemorySink)
    assert_type(FakeClock().now(), float)


@offload(kind="process", max_concurrent=2)
def crunch(data: bytes, *, rounds: int = 1) -> int:
    return len(data) * rounds


async def offloaded() -> None:
    assert_type(await crunch(b"x", rounds=3), int)
    crunch("text")  # type: ignore[arg-type,unused-coroutine]  # pyright: ignore[reportArgumentType,reportUnusedCoroutine]
