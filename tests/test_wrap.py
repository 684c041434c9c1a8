"""The decorator core: every callable shape keeps its identity and runs its policy's hooks."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import anyio
import pytest
import wrapt

from resilient._wrap import MUST_WAIT, Policy


class Recorder(Policy[int]):
    """A policy that admits everything and records what the core tells it."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.tokens = 0

    def _enter(self) -> int:
        self.tokens += 1
        self.events.append(("enter", self.tokens))
        return self.tokens

    def _exit_ok(self, token: int, result: object) -> None:
        self.events.append(("ok", token, result))

    def _exit_error(self, token: int, exc: BaseException) -> None:
        self.events.append(("error", token, type(exc)))


class Waiter(Recorder):
    """A policy whose async callers always have to wait."""

    def _enter_nowait(self) -> int:
        return MUST_WAIT  # type: ignore[no-any-return]

    async def _enter_wait(self) -> int:
        await anyio.lowlevel.checkpoint()
        self.events.append(("waited",))
        return self._enter()


@pytest.fixture
def policy() -> Recorder:
    return Recorder()


def test_sync_function_keeps_identity(policy: Recorder) -> None:
    def add(x: int, y: int = 1) -> int:
        """Add."""
        return x + y

    guarded = policy(add)
    assert guarded(2, y=3) == 5
    assert guarded.__name__ == "add"
    assert guarded.__qualname__ == add.__qualname__
    assert guarded.__doc__ == "Add."
    assert guarded.__wrapped__ is add  # type: ignore[attr-defined]
    assert inspect.signature(guarded) == inspect.signature(add)
    assert not inspect.iscoroutinefunction(guarded)
    assert policy.events == [("enter", 1), ("ok", 1, 5)]


def test_sync_exception_reaches_exit_error_and_propagates(policy: Recorder) -> None:
    @policy
    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        boom()
    assert policy.events == [("enter", 1), ("error", 1, KeyError)]


@pytest.mark.anyio
async def test_async_function_stays_a_coroutine_function(policy: Recorder) -> None:
    async def double(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return 2 * x

    guarded = policy(double)
    assert inspect.iscoroutinefunction(guarded)
    assert inspect.signature(guarded) == inspect.signature(double)
    assert await guarded(4) == 8
    assert policy.events == [("enter", 1), ("ok", 1, 8)]


@pytest.mark.anyio
async def test_async_exception_and_cancellation_reach_exit_error(policy: Recorder) -> None:
    @policy
    async def boom() -> None:
        raise ValueError

    @policy
    async def forever() -> None:
        await anyio.sleep_forever()

    with pytest.raises(ValueError):
        await boom()
    with anyio.move_on_after(0.01):
        await forever()
    cancelled = anyio.get_cancelled_exc_class()
    assert policy.events == [
        ("enter", 1),
        ("error", 1, ValueError),
        ("enter", 2),
        ("error", 2, cancelled),
    ]


@pytest.mark.anyio
async def test_async_callers_wait_when_told_to() -> None:
    policy = Waiter()

    @policy
    async def one() -> int:
        return 1

    assert await one() == 1
    async with policy:
        pass
    assert policy.events == [
        ("waited",),
        ("enter", 1),
        ("ok", 1, 1),
        ("waited",),
        ("enter", 2),
        ("ok", 2, None),
    ]


def test_methods_classmethods_and_staticmethods_bind(policy: Recorder) -> None:
    class Service:
        factor = 10

        @policy
        def method(self, x: int) -> int:
            return self.factor * x

        @policy
        @classmethod
        def outer_classmethod(cls, x: int) -> int:
            return cls.factor + x

        @classmethod
        @policy
        def inner_classmethod(cls, x: int) -> int:
            return cls.factor - x

        @policy
        @staticmethod
        def outer_staticmethod(x: int) -> int:
            return -x

        @staticmethod
        @policy
        def inner_staticmethod(x: int) -> int:
            return x * x

    service = Service()
    assert service.method(2) == 20
    assert Service.outer_classmethod(1) == 11
    assert service.inner_classmethod(1) == 9
    assert Service.outer_staticmethod(3) == -3
    assert service.inner_staticmethod(3) == 9
    assert [e[0] for e in policy.events].count("ok") == 5
    assert inspect.signature(Service.method).parameters.keys() == {"self", "x"}
    assert isinstance(Service.__dict__["outer_classmethod"], classmethod)
    assert isinstance(Service.__dict__["outer_staticmethod"], staticmethod)


@pytest.mark.anyio
async def test_async_methods_bind(policy: Recorder) -> None:
    class Service:
        @policy
        async def method(self, x: int) -> tuple[Service, int]:
            return self, x

        @policy
        @classmethod
        async def cm(cls, x: int) -> int:
            return x + 1

    service = Service()
    assert await service.method(1) == (service, 1)
    assert await Service.cm(1) == 2
    assert inspect.iscoroutinefunction(Service.method)
    assert inspect.iscoroutinefunction(service.cm)


@pytest.mark.anyio
async def test_callable_instances_and_partials(policy: Recorder) -> None:
    class AsyncCallable:
        async def __call__(self, x: int) -> int:
            return x + 100

    class SyncCallable:
        def __call__(self, x: int) -> int:
            return x - 100

    async def base(x: int, y: int) -> int:
        return x * y

    guarded_async = policy(AsyncCallable())
    assert inspect.iscoroutinefunction(guarded_async)
    assert await guarded_async(1) == 101
    assert policy(SyncCallable())(1) == -99
    guarded_partial = policy(functools.partial(base, 3))
    assert inspect.iscoroutinefunction(guarded_partial)
    assert await guarded_partial(4) == 12


def test_builtins_are_guarded(policy: Recorder) -> None:
    assert policy(len)([1, 2]) == 2
    assert policy.events == [("enter", 1), ("ok", 1, 2)]


def test_callables_with_their_own_binding_go_through_wrapt(policy: Recorder) -> None:
    seen: list[object] = []

    @wrapt.decorator
    def remember_instance(wrapped: Any, instance: object, args: Any, kwargs: Any) -> Any:
        seen.append(instance)
        return wrapped(*args, **kwargs)

    class Service:
        @policy
        @remember_instance
        def method(self, x: int) -> int:
            return x + 1

    service = Service()
    assert service.method(1) == 2
    # The inner wrapt decorator saw the instance: binding went through its own __get__.
    assert seen == [service]
    assert policy.events == [("enter", 1), ("ok", 1, 2)]
    assert Service.method.__name__ == "method"


@pytest.mark.anyio
async def test_async_callables_with_their_own_binding(policy: Recorder) -> None:
    @wrapt.decorator
    async def passthrough(wrapped: Any, instance: object, args: Any, kwargs: Any) -> Any:
        return await wrapped(*args, **kwargs)

    class Service:
        @policy
        @passthrough
        async def method(self, x: int) -> int:
            return x + 2

    assert inspect.iscoroutinefunction(Service.method)
    assert await Service().method(1) == 3


def test_generators_are_refused_with_a_reason(policy: Recorder) -> None:
    def gen() -> Any:
        yield 1

    async def agen() -> Any:
        yield 1

    for fn in (gen, agen):
        with pytest.raises(TypeError, match="generator function"):
            policy(fn)


def test_classes_and_non_callables_are_refused(policy: Recorder) -> None:
    with pytest.raises(TypeError, match="cannot decorate the class"):
        policy(int)
    with pytest.raises(TypeError, match="only decorate a callable"):
        policy(42)  # type: ignore[call-overload]


def test_sync_context_manager_nests_and_reports_errors(policy: Recorder) -> None:
    with policy as entered:
        assert entered is policy
        with policy:
            pass
    with pytest.raises(RuntimeError), policy:
        raise RuntimeError
    assert policy.events == [
        ("enter", 1),
        ("enter", 2),
        ("ok", 2, None),
        ("ok", 1, None),
        ("enter", 3),
        ("error", 3, RuntimeError),
    ]


def test_interleaved_policies_pop_their_own_tokens() -> None:
    first, second = Recorder(), Recorder()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # out of order: still first's token
    second.__exit__(None, None, None)
    assert first.events == [("enter", 1), ("ok", 1, None)]
    assert second.events == [("enter", 1), ("ok", 1, None)]


def test_exit_without_enter_is_an_error(policy: Recorder) -> None:
    with pytest.raises(RuntimeError, match="without a matching enter"):
        policy.__exit__(None, None, None)


@pytest.mark.anyio
async def test_async_context_manager_is_per_task(policy: Recorder) -> None:
    results: list[int] = []

    async def worker(n: int) -> None:
        async with policy:
            await anyio.sleep(0.001 * n)
            results.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(worker, n)
    assert sorted(results) == [0, 1, 2, 3, 4]
    enters = {e[1] for e in policy.events if e[0] == "enter"}
    oks = {e[1] for e in policy.events if e[0] == "ok"}
    assert enters == oks == {1, 2, 3, 4, 5}


@pytest.mark.anyio
async def test_async_context_manager_sees_cancellation(policy: Recorder) -> None:
    with anyio.move_on_after(0.01):
        async with policy:
            await anyio.sleep_forever()
    assert policy.events == [("enter", 1), ("error", 1, anyio.get_cancelled_exc_class())]


def test_must_wait_has_a_readable_repr() -> None:
    assert repr(MUST_WAIT) == "MUST_WAIT"
