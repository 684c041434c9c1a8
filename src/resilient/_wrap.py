"""The one place that turns a policy into a decorator and a context manager.

A policy (a circuit breaker, a concurrency limit, ...) subclasses `Policy` and supplies four hooks:

- `_enter()`: admit a sync caller or raise `RejectedError`; may block the calling thread while
  it waits. Returns a *token* that is handed back to one of the exit hooks.
- `_enter_nowait()`: admit an async caller without blocking; returns a token, or `MUST_WAIT` when
  the caller has to wait, in which case `await _enter_wait()` returns the token. Policies that never
  wait alias it to `_enter` (the default).
- `_exit_ok(token, result)` / `_exit_error(token, exc)`: the call returned or raised. They must not
  raise. Cancellation arrives in `_exit_error` too; `is_cancellation()` tells it apart.

Everything is decided once, at decoration time: sync or async, function or descriptor, generator
(refused). The hooks are bound into the wrapper's closure then, so a policy changes behaviour by
changing state its hooks read, never by reassigning the hooks.

Why closures and not `wrapt.FunctionWrapper` on the hot path: measured on the project machine, a
`FunctionWrapper` passthrough costs about 430 ns per call against about 60 ns for a closure, more
than a whole circuit breaker may cost (docs/design.md, benchmarks/overhead.py). A closure already
binds like a function (methods get `self`; classmethods and staticmethods are unwrapped and
rewrapped). wrapt is used where a closure would be wrong: a callable with its own `__get__` (for
example a function that another wrapt decorator wraps), whose binding must go through that
`__get__`.
"""

from __future__ import annotations

import abc
import contextvars
import functools
import inspect
import types
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

import wrapt
from typing_extensions import ParamSpec, Self


if TYPE_CHECKING:
    from collections.abc import Callable


__all__ = ["MUST_WAIT", "Policy"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
TokenT = TypeVar("TokenT")


class _MustWait:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MUST_WAIT"


MUST_WAIT: Any = _MustWait()
"""Returned by `Policy._enter_nowait()` when an async caller has to `await _enter_wait()`."""

# Tokens of the context managers currently entered in this thread or task, innermost last. One
# variable for all policies; each entry is (policy, token). A tuple, because contexts are copied
# into child tasks: an immutable stack cannot be corrupted by a child that exits late.
_entered: contextvars.ContextVar[tuple[tuple[object, object], ...]] = contextvars.ContextVar(
    "resilient_entered", default=()
)


class Policy(Generic[TokenT], metaclass=abc.ABCMeta):
    """Base class of every policy: decorator, sync and async context manager.

    Subclasses implement the hooks described in the module docstring (`_enter`, `_exit_ok` and
    `_exit_error` are abstract). `__slots__` is empty so that a policy can also inherit from a
    slotted base. The metaclass costs nothing per call: it only checks, at instantiation, that
    the hooks exist.
    """

    __slots__ = ()

    # --- hooks -------------------------------------------------------------------------------

    @abc.abstractmethod
    def _enter(self) -> TokenT:
        """Admit a sync caller (may block its thread) and return a token, or raise RejectedError."""

    def _enter_nowait(self) -> TokenT:
        return self._enter()

    async def _enter_wait(self) -> TokenT:  # pragma: no cover - only waiting policies override
        raise AssertionError("unreachable")

    @abc.abstractmethod
    def _exit_ok(self, token: TokenT, result: object) -> None:
        """The call admitted with *token* returned *result*. Must not raise."""

    @abc.abstractmethod
    def _exit_error(self, token: TokenT, exc: BaseException) -> None:
        """The call admitted with *token* raised *exc* (cancellation included). Must not raise."""

    # --- decorator ---------------------------------------------------------------------------

    @overload
    def __call__(self, fn: classmethod[T, P, R], /) -> classmethod[T, P, R]: ...
    @overload
    def __call__(self, fn: staticmethod[P, R], /) -> staticmethod[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, R]: ...
    def __call__(self, fn: Any, /) -> Any:
        """Decorate *fn*: sync and async functions, methods, classmethods, staticmethods.

        Raises:
            TypeError: *fn* is not callable, is a class, or is a generator or async generator
                function (a policy around a generator would only cover the creation of the
                generator object, not its iteration).
        """
        return wrap(self, fn)

    # --- context managers ----------------------------------------------------------------------

    def __enter__(self) -> Self:
        token = self._enter()
        _entered.set((*_entered.get(), (self, token)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        token = self._pop_token()
        if exc is None:
            self._exit_ok(token, None)
        else:
            self._exit_error(token, exc)

    async def __aenter__(self) -> Self:
        token = self._enter_nowait()
        if token is MUST_WAIT:
            token = await self._enter_wait()
        _entered.set((*_entered.get(), (self, token)))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _pop_token(self) -> TokenT:
        stack = _entered.get()
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] is self:
                _entered.set(stack[:i] + stack[i + 1 :])
                return cast("TokenT", stack[i][1])
        msg = f"{self!r} exited without a matching enter in this thread or task"
        raise RuntimeError(msg)


def wrap(policy: Policy[Any], fn: Any) -> Any:
    """Return *fn* guarded by *policy*, with its name, docstring, signature and async-ness kept."""
    if isinstance(fn, (classmethod, staticmethod)):
        descriptor = cast("Any", fn)  # classmethod or staticmethod of anything
        return type(descriptor)(wrap(policy, descriptor.__func__))
    if isinstance(fn, type):
        msg = (
            f"{type(policy).__name__} cannot decorate the class {fn.__qualname__}: "
            "decorate its methods (or its __call__) instead"
        )
        raise TypeError(msg)
    if not callable(fn):
        msg = f"{type(policy).__name__} can only decorate a callable, got {fn!r}"
        raise TypeError(msg)
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        msg = (
            f"{type(policy).__name__} cannot decorate the generator function "
            f"{getattr(fn, '__qualname__', fn)!r}: it would guard only the creation of the "
            "generator, not its iteration. Guard the code that consumes it instead."
        )
        raise TypeError(msg)
    is_async = _is_async_callable(fn)
    if _binds_itself(fn):
        return _descriptor_wrapper(policy, fn, is_async)
    wrapper = _async_closure(policy, fn) if is_async else _sync_closure(policy, fn)
    return functools.update_wrapper(wrapper, fn)


def _is_async_callable(fn: object) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    # A callable instance whose __call__ is `async def` (Starlette's is_async_callable agrees).
    call = getattr(fn, "__call__", None)  # noqa: B004 - we want the attribute, not callable()
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(call)


def _binds_itself(fn: object) -> bool:
    """Tell whether *fn* has its own `__get__` that a plain closure would bypass."""
    # type(), not isinstance(): proxies such as wrapt's pass isinstance() checks for functions.
    cls = type(fn)
    if cls in (types.FunctionType, types.BuiltinFunctionType, types.MethodType):
        return False
    return hasattr(cls, "__get__")


def _sync_closure(policy: Policy[Any], fn: Callable[..., Any]) -> Callable[..., Any]:
    enter = policy._enter
    exit_ok = policy._exit_ok
    exit_error = policy._exit_error

    def guarded(*args: Any, **kwargs: Any) -> Any:
        token = enter()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            exit_error(token, exc)
            raise
        exit_ok(token, result)
        return result

    return guarded


def _async_closure(policy: Policy[Any], fn: Callable[..., Any]) -> Callable[..., Any]:
    enter_nowait = policy._enter_nowait
    enter_wait = policy._enter_wait
    exit_ok = policy._exit_ok
    exit_error = policy._exit_error

    async def guarded(*args: Any, **kwargs: Any) -> Any:
        token = enter_nowait()
        if token is MUST_WAIT:
            token = await enter_wait()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            exit_error(token, exc)
            raise
        exit_ok(token, result)
        return result

    return guarded


def _descriptor_wrapper(policy: Policy[Any], fn: Any, is_async: bool) -> Any:
    # wrapt hands us the callable already bound through fn's own __get__ (`wrapped`); guard that.
    # This path is for unusual callables only, so building the closure per call is acceptable.
    make = _async_closure if is_async else _sync_closure

    def through(
        wrapped: Any,
        instance: object,  # noqa: ARG001 - already bound into `wrapped`
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        return make(policy, wrapped)(*args, **kwargs)

    return wrapt.FunctionWrapper(fn, through)
