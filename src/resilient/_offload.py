"""`offload`: run blocking or CPU-bound sync functions in threads or processes, behind own bounds.

The event loop must never run long (>10 ms) work itself. anyio provides the workers; used naively
they share one 40-token thread pool with Starlette/FastAPI's sync endpoints (exhausting it
deadlocks FastAPI), let abandoned threads pile up past any limit, and fail obscurely on pickling or
on a killed worker. `offload` adds:

- **its own capacity**: a `ConcurrencyLimit` (`max_concurrent`, `max_waiting`, `max_wait`), so
  offloaded work cannot starve the framework's pool, nor the reverse;
- **an honest cap for threads**: on timeout or cancellation the caller is released at once, but
  the permit belongs to the worker thread and is returned only when the function really ends;
- **processes that fail one call at a time**: the function is sent by reference (module and
  qualified name, resolved and unwrapped in the worker), arguments and results are pickled by us so
  a pickling problem gets a clear `TypeError`, a worker that dies fails only its own call with
  `WorkerCrashedError` and is replaced, and a timed-out worker is killed and replaced.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import pickle
import threading
import weakref
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_process
import anyio.to_thread

from resilient._clock import system_clock
from resilient._concurrency import ConcurrencyLimit
from resilient._errors import WorkerCrashedError
from resilient._validate import in_range
from resilient._wrap import MUST_WAIT
from resilient.metrics._catalog import NAME, OFFLOAD_DURATION


if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from typing_extensions import ParamSpec

    from resilient._clock import Clock
    from resilient.metrics._sink import MetricsSink

    P = ParamSpec("P")

R = TypeVar("R")
WorkerKind = Literal["thread", "process"]

__all__ = ["offload"]

logger = logging.getLogger("resilient.offload")

# The attribute that marks our wrapper, so a worker process unwraps exactly this layer.
_MARK = "__resilient_offload__"


def offload(
    *,
    kind: WorkerKind = "thread",
    max_concurrent: int | None = None,
    max_waiting: int = 1000,
    max_wait: float | None = None,
    timeout: float | None = None,
    name: str | None = None,
    sink: MetricsSink | None = None,
    clock: Clock | None = None,
) -> Callable[[Callable[P, R]], Callable[P, Coroutine[Any, Any, R]]]:
    """Turn a sync function into a coroutine function that runs it in a worker.

    Args:
        kind: `"thread"` (blocking I/O, C code that releases the GIL) or `"process"` (CPU-bound
            Python). Process functions must be importable: defined at module level (or as a
            method of a module-level class), not a lambda or a closure.
        max_concurrent: workers busy at once (default: the number of CPUs for processes, and
            `min(32, CPUs + 4)` for threads, like `concurrent.futures`).
        max_waiting: callers that may wait for a worker (default 1000); beyond that, and after
            `max_wait`, a caller gets `ConcurrencyLimitError`.
        max_wait: seconds a caller may wait for a worker (default `None`: as long as it takes).
        timeout: seconds a call may take once running; then the caller gets `TimeoutError`.
            A thread cannot be stopped: it keeps its worker slot until it ends. A process is
            killed and replaced.
        name: names the policy in errors and metrics (default: the function's qualified name).
        sink: metrics sink (default: the process-wide default sink).
        clock: clock for waits and durations (default the system clock).

    Raises:
        TypeError: (at decoration) the function is async, a generator, or, for processes, not
            importable by name.
        ValueError: an option is out of range.
    """
    if kind not in ("thread", "process"):
        msg = f"kind must be 'thread' or 'process', got {kind!r}"
        raise ValueError(msg)
    cpus = os.cpu_count() or 2
    if max_concurrent is None:
        max_concurrent = cpus if kind == "process" else min(32, cpus + 4)
    if timeout is not None:
        timeout = in_range("timeout", timeout, 0.0, open_low=True)

    def decorate(fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
        _check_target(fn, kind)
        limit = ConcurrencyLimit(
            max_concurrent,
            max_waiting=max_waiting,
            max_wait=max_wait,
            name=name or getattr(fn, "__qualname__", None),
            sink=sink,
            clock=clock or system_clock,
        )
        worker = _Worker(fn, kind, limit, timeout, clock or system_clock)
        wrapper = _async_wrapper(worker)
        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
        for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
            with contextlib.suppress(AttributeError):
                setattr(wrapper, attribute, getattr(fn, attribute))
        wrapper.__dict__.update(getattr(fn, "__dict__", {}))
        setattr(wrapper, _MARK, worker)
        return wrapper

    return decorate


def _check_target(fn: object, kind: WorkerKind) -> None:
    if not callable(fn) or isinstance(fn, type):
        msg = f"offload decorates a sync function, got {fn!r}"
        raise TypeError(msg)
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        msg = f"offload runs sync functions in workers; {fn!r} is already async: await it directly"
        raise TypeError(msg)
    if inspect.isgeneratorfunction(fn):
        msg = f"offload cannot run the generator function {fn!r} in a worker: return a list"
        raise TypeError(msg)
    qualname = getattr(fn, "__qualname__", "")
    if kind == "process" and (
        not getattr(fn, "__module__", None) or "<" in qualname or not qualname
    ):
        msg = (
            f"offload(kind='process') needs a function a worker process can import by module and "
            f"qualified name; {qualname or fn!r} is a lambda, a closure or has no name. "
            "Define it at module level."
        )
        raise TypeError(msg)


def _async_wrapper(worker: _Worker) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def offloaded(*args: Any, **kwargs: Any) -> Any:
        return await worker.call(args, kwargs)

    return offloaded


class _Worker:
    """One offloaded function: admission, then a thread or a process, then metrics."""

    __slots__ = ("attributes", "clock", "fn", "kind", "limit", "timeout")

    def __init__(
        self,
        fn: Callable[..., Any],
        kind: WorkerKind,
        limit: ConcurrencyLimit,
        timeout: float | None,
        clock: Clock,
    ) -> None:
        self.fn = fn
        self.clock = clock
        self.kind = kind
        self.limit = limit
        self.timeout = timeout
        self.attributes = {NAME: limit.name or "", "worker.kind": kind}

    async def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        limit = self.limit
        token = limit._enter_nowait()
        if token is MUST_WAIT:
            token = await limit._enter_wait()
        if self.kind == "thread":
            return await self._in_thread(token, args, kwargs)
        try:
            return await self._in_process(args, kwargs)
        finally:
            limit._exit_ok(token, None)

    # --- threads -------------------------------------------------------------------------------

    async def _in_thread(self, token: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        job = _ThreadJob(self, token, args, kwargs)
        try:
            with _deadline(self.timeout):
                return await anyio.to_thread.run_sync(
                    job.run, abandon_on_cancel=True, limiter=_thread_limiter(self.limit)
                )
        finally:
            job.abandon()

    # --- processes -----------------------------------------------------------------------------

    async def _in_process(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        fn = self.fn
        try:
            payload = pickle.dumps((args, kwargs), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            msg = f"the arguments of {fn.__qualname__} cannot be sent to a worker process: {exc}"
            raise TypeError(msg) from exc
        clock = self.clock
        limiter = _process_limiter(self.limit)
        if self.timeout is not None:
            await _warm(fn.__module__, limiter)
        started = clock.now()
        error: BaseException | None = None
        try:
            with _deadline(self.timeout):
                status, result = await anyio.to_process.run_sync(
                    _call_by_reference,
                    fn.__module__,
                    fn.__qualname__,
                    payload,
                    cancellable=True,  # on timeout or cancellation, kill the worker
                    limiter=limiter,
                )
        except anyio.BrokenWorkerProcess as exc:
            error = WorkerCrashedError(
                f"the worker process running {fn.__qualname__} died during the call "
                "(killed, crashed or exited); it has been replaced"
            )
            logger.warning("%s", error, extra={"function": fn.__qualname__})
            raise error from exc
        except BaseException as exc:
            error = exc
            raise
        else:
            if status == "unpicklable":
                msg = f"the result of {fn.__qualname__} cannot be sent back from a worker: {result}"
                error = TypeError(msg)
        finally:
            self.record(clock.now() - started, error)
        if error is not None:
            raise error
        return pickle.loads(result)  # noqa: S301 - our own worker's bytes

    def record(self, duration: float, error: BaseException | None) -> None:
        attributes = self.attributes
        if error is not None:
            attributes = {**attributes, "error.type": type(error).__qualname__}
        self.limit._emit(OFFLOAD_DURATION, duration, attributes)


class _ThreadJob:
    """A call handed to a worker thread.

    Its permit is returned exactly once: by the thread when the function ends, or by the caller if
    the thread never started it.
    """

    __slots__ = ("args", "kwargs", "lock", "state", "token", "worker")

    def __init__(
        self, worker: _Worker, token: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.worker, self.token, self.args, self.kwargs = worker, token, args, kwargs
        self.lock = threading.Lock()
        self.state: Literal["pending", "running", "abandoned"] = "pending"

    def run(self) -> Any:
        with self.lock:
            if self.state == "abandoned":
                return None  # the caller left before we started: it returned the permit
            self.state = "running"
        worker = self.worker
        clock = worker.clock
        started = clock.now()
        error: BaseException | None = None
        try:
            return worker.fn(*self.args, **self.kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            worker.limit._exit_ok(self.token, None)
            worker.record(clock.now() - started, error)

    def abandon(self) -> None:
        """The caller is done (result, error, timeout or cancellation)."""
        with self.lock:
            never_started = self.state == "pending"
            self.state = "abandoned" if never_started else self.state
        if never_started:
            self.worker.limit._exit_ok(self.token, None)


_warmed: anyio.lowlevel.RunVar[set[str]] = anyio.lowlevel.RunVar("resilient_warmed")


async def _warm(module: str, limiter: anyio.CapacityLimiter) -> None:
    """Start a worker and import *module* in it, once per event loop, outside any timeout.

    A timed call that has to start a worker would spend ~100 ms (plus the module's import) of
    its timeout on that; with a timeout shorter than the start-up, every call would time out and
    kill the half-started worker. Warming once covers the common case; a call that needs an
    extra worker later still pays its start-up.
    """
    try:
        warmed = _warmed.get()
    except LookupError:
        warmed = set[str]()
        _warmed.set(warmed)
    if module not in warmed:
        await anyio.to_process.run_sync(_import, module, limiter=limiter)
        warmed.add(module)


def _import(module: str) -> None:
    """Run in the worker process: import *module* (and return nothing that needs pickling)."""
    importlib.import_module(module)


def _call_by_reference(module: str, qualname: str, payload: bytes) -> tuple[str, Any]:
    """Run in the worker process: find the function by name, call it, pickle its result."""
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    # Decorated with @offload, the module attribute is the outermost wrapper: go down to the one
    # that carries our mark (outer decorators made with functools.wraps copy it), which holds the
    # function below offload. Wrapped by a call, `fast = offload()(slow)`, the name finds `slow`.
    while not hasattr(target, _MARK) and hasattr(target, "__wrapped__"):
        target = target.__wrapped__
    worker = getattr(target, _MARK, None)
    fn = target if worker is None else worker.fn
    args, kwargs = pickle.loads(payload)  # noqa: S301 - our own parent's bytes
    result = fn(*args, **kwargs)
    try:
        return "ok", pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - reported to the caller as a TypeError
        return "unpicklable", f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _deadline(timeout: float | None) -> Any:
    if timeout is None:
        yield
    else:
        with anyio.fail_after(timeout):
            yield


# anyio's limiters belong to one event loop, and an offload policy may serve several (tests, or
# one loop per thread), so each policy keeps one limiter per loop, sized like its own cap. Our
# ConcurrencyLimit is the real bound; this one only keeps anyio from applying its shared default.
_Limiters = weakref.WeakKeyDictionary[ConcurrencyLimit, anyio.CapacityLimiter]
_thread_limiters: anyio.lowlevel.RunVar[_Limiters] = anyio.lowlevel.RunVar("resilient_threads")
_process_limiters: anyio.lowlevel.RunVar[_Limiters] = anyio.lowlevel.RunVar("resilient_processes")


def _limiter(
    var: anyio.lowlevel.RunVar[_Limiters], limit: ConcurrencyLimit
) -> anyio.CapacityLimiter:
    try:
        limiters = var.get()
    except LookupError:
        limiters = _Limiters()
        var.set(limiters)
    limiter = limiters.get(limit)
    if limiter is None:
        limiter = limiters[limit] = anyio.CapacityLimiter(limit.max_concurrent)
    return limiter


def _thread_limiter(limit: ConcurrencyLimit) -> anyio.CapacityLimiter:
    return _limiter(_thread_limiters, limit)


def _process_limiter(limit: ConcurrencyLimit) -> anyio.CapacityLimiter:
    return _limiter(_process_limiters, limit)
