"""offload: sync work in threads and processes, behind its own bounds, one failure at a time."""

from __future__ import annotations

import contextvars
import inspect
import pickle
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from resilient import ConcurrencyLimitError, WorkerCrashedError, offload
from resilient._offload import _call_by_reference, _import, _ThreadJob
from resilient.metrics import OFFLOAD_DURATION
from resilient.testing import capture_metrics


sys.path.insert(0, str(Path(__file__).parent))  # worker processes import helpers by name

from helpers import offload_targets as targets


request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class Gauge:
    """Counts calls running at once, from inside the function."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


def stats(fn: object) -> object:
    return fn.__resilient_offload__.limit.statistics()  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_thread_call_returns_and_stays_a_coroutine_function() -> None:
    @offload()
    def add(x: int, y: int) -> tuple[int, str, bool]:
        return x + y, request_id.get(), threading.current_thread() is threading.main_thread()

    assert inspect.iscoroutinefunction(add)
    assert add.__name__ == "add"
    request_id.set("req-42")
    assert await add(1, 2) == (3, "req-42", False)  # context propagates; not the loop's thread


@pytest.mark.anyio
async def test_thread_errors_propagate_and_are_recorded() -> None:
    @offload(name="boom")
    def boom() -> None:
        raise KeyError("x")

    with capture_metrics() as sink, pytest.raises(KeyError):
        await boom()
    [measurement] = sink.measurements(OFFLOAD_DURATION)
    assert measurement.attributes == {
        "resilient.name": "boom",
        "worker.kind": "thread",
        "error.type": "KeyError",
    }


@pytest.mark.anyio
async def test_a_thousand_thread_calls_never_run_more_than_four_at_once() -> None:
    gauge = Gauge()

    @offload(max_concurrent=4, max_waiting=1000)
    def work(i: int) -> int:
        with gauge:
            time.sleep(0.0005)
        return i

    results: list[int] = []

    async def one(i: int) -> None:
        results.append(await work(i))

    async with anyio.create_task_group() as tg:
        for i in range(1000):
            tg.start_soon(one, i)
    assert sorted(results) == list(range(1000))
    assert gauge.peak == 4
    assert stats(work).active == 0  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_thread_timeout_frees_the_caller_but_not_the_slot() -> None:
    release = threading.Event()
    gauge = Gauge()

    @offload(max_concurrent=1, max_waiting=0, timeout=0.05)
    def stuck() -> None:
        with gauge:
            release.wait(5)

    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        await stuck()
    assert time.perf_counter() - started < 1  # released at once, not after the thread
    assert stats(stuck).active == 1  # type: ignore[attr-defined]
    with pytest.raises(ConcurrencyLimitError):
        await stuck()  # the cap holds: the abandoned thread still counts
    release.set()
    for _ in range(200):
        if stats(stuck).active == 0:  # type: ignore[attr-defined]
            break
        await anyio.sleep(0.01)
    assert stats(stuck).active == 0  # type: ignore[attr-defined]
    assert gauge.peak == 1


@pytest.mark.anyio
async def test_cancelled_thread_callers_leak_no_slot() -> None:
    @offload(max_concurrent=2, max_waiting=100)
    def nap(seconds: float) -> None:
        time.sleep(seconds)

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(nap, 0.01 * (i % 3))
        await anyio.sleep(0.015)
        tg.cancel_scope.cancel()
    for _ in range(200):
        s = stats(nap)
        if s.active == 0 and s.waiting == 0:  # type: ignore[attr-defined]
            break
        await anyio.sleep(0.01)
    assert (stats(nap).active, stats(nap).waiting) == (0, 0)  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_process_call_round_trip_and_methods() -> None:
    assert await targets.square(12) == 144
    assert await targets.Shapes.area(3, 4) == 12
    assert await targets.cube(3) == 27  # offload below another decorator
    assert await targets.negate(3) == -3  # ... and below one that copies nothing
    with pytest.raises(ValueError, match="bad input"):
        await targets.fail("bad input")


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["sigkill", "exit"])
async def test_a_dying_worker_fails_its_call_alone_and_is_replaced(how: str) -> None:
    with capture_metrics() as sink, pytest.raises(WorkerCrashedError, match="died during the call"):
        await targets.die(how)
    assert await targets.square(5) == 25
    [measurement] = sink.measurements(OFFLOAD_DURATION, {"error.type": "WorkerCrashedError"})
    assert measurement.attributes["worker.kind"] == "process"


@pytest.mark.anyio
async def test_a_process_timeout_kills_the_worker_and_the_next_call_works() -> None:
    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        await targets.sleep_for(10)
    assert time.perf_counter() - started < 3
    assert await targets.sleep_for(0.01) == 0.01
    assert stats(targets.sleep_for).active == 0  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_thousand_process_calls_never_run_more_than_four_at_once() -> None:
    spans: list[tuple[float, float]] = []

    async def one() -> None:
        spans.append(await targets.interval(0.0005))

    async with anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(one)
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert len(spans) == 1000
    assert peak <= 4


@pytest.mark.anyio
async def test_pickling_problems_get_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match="arguments of square cannot be sent to a worker process"):
        await targets.square(lambda: 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="result of unpicklable_result cannot be sent back"):
        await targets.unpicklable_result()


@pytest.mark.anyio
async def test_a_full_queue_rejects() -> None:
    release = threading.Event()

    @offload(max_concurrent=1, max_waiting=0)
    def hold() -> None:
        release.wait(5)

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await anyio.sleep(0.05)
        with pytest.raises(ConcurrencyLimitError):
            await hold()
        release.set()


def test_what_cannot_be_offloaded_is_refused_at_decoration() -> None:
    def closure() -> None:
        pass

    async def coroutine() -> None:
        pass

    def generator() -> object:
        yield 1

    with pytest.raises(TypeError, match="lambda, a closure"):
        offload(kind="process")(closure)
    with pytest.raises(TypeError, match="lambda, a closure"):
        offload(kind="process")(lambda: None)
    with pytest.raises(TypeError, match="already async"):
        offload()(coroutine)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="generator function"):
        offload()(generator)
    with pytest.raises(TypeError, match="decorates a sync function"):
        offload()(int)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"kind": "fiber"}, ValueError, "kind must be 'thread' or 'process'"),
        ({"timeout": 0}, ValueError, "timeout must be a number > 0"),
        ({"timeout": "1"}, TypeError, "timeout must be a number > 0"),
    ],
)
def test_bad_configuration_names_the_parameter(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        offload(**kwargs)  # type: ignore[arg-type]


def test_limit_options_are_checked_when_decorating() -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        offload(max_concurrent=0)(time.sleep)


def test_a_job_abandoned_before_its_thread_starts_returns_its_permit_once() -> None:
    ran: list[int] = []

    @offload(max_concurrent=1)
    def work() -> None:
        ran.append(1)

    worker = work.__resilient_offload__  # type: ignore[attr-defined]
    token = worker.limit._enter()
    job = _ThreadJob(worker, token, (), {})
    job.abandon()  # the caller was cancelled before a thread picked the job up
    assert worker.limit.statistics().active == 0
    assert job.run() is None  # the thread arrives late: nothing runs, nothing is released twice
    assert ran == []
    assert worker.limit.statistics().active == 0


def test_the_worker_side_finds_the_function_below_every_wrapper() -> None:
    payload = pickle.dumps(((6,), {}))
    status, result = _call_by_reference("helpers.offload_targets", "square", payload)
    assert (status, pickle.loads(result)) == ("ok", 36)  # noqa: S301
    status, result = _call_by_reference("helpers.offload_targets", "negate", payload)
    assert (status, pickle.loads(result)) == ("ok", -6)  # noqa: S301
    assert _import("helpers.offload_targets") is None  # the warm-up, as a worker runs it
    status, message = _call_by_reference(
        "helpers.offload_targets", "unpicklable_result", pickle.dumps(((), {}))
    )
    assert status == "unpicklable"
    assert "pickle" in message


@pytest.mark.anyio
async def test_a_short_timeout_does_not_count_the_worker_start_up() -> None:
    # Starting a worker and importing the module takes ~100 ms: more than this timeout.
    assert await targets.quick_double(21) == 42
    with capture_metrics() as sink, pytest.raises(TypeError):
        await targets.unpicklable_result()
    [measurement] = sink.measurements(OFFLOAD_DURATION)
    assert measurement.attributes["error.type"] == "TypeError"
