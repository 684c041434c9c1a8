"""CircuitBreaker under threads and tasks: exact counters, bounded probes, cancellation."""

from __future__ import annotations

import contextlib
import contextvars
import random
import sys
import threading
from typing import Any

import anyio
import pytest

from resilient import Backoff, CircuitBreaker, CircuitOpenError, ConsecutiveFailures, FailureRate
from resilient._breaker_state import BreakerState
from resilient.testing import FakeClock


PROBES = 3
_token: contextvars.ContextVar[Any] = contextvars.ContextVar("token")


class Watched(CircuitBreaker):
    """Tells the protected function whether its own call is a half-open probe."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.half_open_gens: set[int] = set()

    def _to(self, new: int, now: float) -> tuple[int, int]:
        event = super()._to(new, now)  # under the lock: before any token of the new generation
        if new == 2:  # HALF_OPEN
            self.half_open_gens.add(self._gen)
        return event

    def _enter(self) -> Any:
        token = super()._enter()
        _token.set(token)
        return token

    _enter_nowait = _enter

    def probe(self) -> int | None:
        """Return the half-open generation this call probes, or None if it is no probe."""
        token = _token.get()
        gen = token if isinstance(token, int) else token[0]
        return gen if gen in self.half_open_gens else None


class Probes:
    """Counts probes of each half-open period running at once, from inside the protected function.

    Per period: once `half_open_timeout` gives up on a period's probes, the next period admits
    its own, while a stuck one may still be running.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: dict[int, int] = {}
        self.most = self.total = 0

    def enter(self, gen: int) -> None:
        with self.lock:
            self.now[gen] = self.now.get(gen, 0) + 1
            self.total += 1
            self.most = max(self.most, self.now[gen])

    def exit(self, gen: int) -> None:
        with self.lock:
            self.now[gen] -= 1


def make_breaker(clock: FakeClock, trip: Any) -> Watched:
    return Watched(
        "c",
        trip=trip,
        backoff=Backoff(0.002, 2.0, 0.01, 0.5),
        half_open_calls=PROBES,
        success_ratio=0.6,
        half_open_timeout=0.05,
        ignore=KeyError,
        clock=clock,
        rng=1,
    )


def check(
    breaker: CircuitBreaker, seen: dict[str, int], probes: Probes, calls: int, full: int
) -> None:
    stats = breaker.statistics()
    assert stats.successes == seen["success"]
    assert stats.failures == seen["failure"]
    assert stats.rejected == seen["rejected"]
    assert stats.ignored == seen["ignored"]
    assert stats.calls == calls
    assert 0 <= stats.window_failures <= stats.window_calls
    assert 0 <= stats.probes_in_flight <= PROBES
    assert probes.most <= PROBES
    # The run must have exercised what it claims to test.
    assert seen["rejected"] > 0
    assert probes.most >= full


TRIPS = [
    pytest.param(ConsecutiveFailures(3), id="consecutive"),
    pytest.param(FailureRate(0.3, calls=20, min_calls=10), id="count-window"),
    pytest.param(FailureRate(0.3, seconds=0.01, buckets=5, min_calls=5), id="time-window"),
]


@pytest.mark.parametrize("trip", TRIPS)
def test_threads(trip) -> None:
    threads, per_thread = 8, 4000
    clock = FakeClock()
    breaker = make_breaker(clock, trip)
    probes = Probes()
    seen = {"success": 0, "failure": 0, "rejected": 0, "ignored": 0}
    seen_lock = threading.Lock()

    @breaker
    def call(action: str) -> None:
        probe = breaker.probe()
        if probe is not None:
            probes.enter(probe)
        try:
            if action == "sleep":
                threading.Event().wait(0.0001)  # let other threads in while this one is inside
            if action == "failure":
                raise OSError
            if action == "ignored":
                raise KeyError
        finally:
            if probe is not None:
                probes.exit(probe)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        mine = dict.fromkeys(seen, 0)
        for _ in range(per_thread):
            action = rng.choices(["success", "sleep", "failure", "ignored"], [60, 5, 30, 5])[0]
            clock.advance(0.0002)
            try:
                call(action)
            except CircuitOpenError:
                mine["rejected"] += 1
            except OSError:
                mine["failure"] += 1
            except KeyError:
                mine["ignored"] += 1
            else:
                mine["success"] += 1
        with seen_lock:
            for key, value in mine.items():
                seen[key] += value

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, to interleave inside the breaker
    try:
        workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    check(breaker, seen, probes, threads * per_thread, full=1)


@pytest.mark.anyio
@pytest.mark.parametrize("trip", TRIPS)
async def test_tasks(trip) -> None:
    tasks, per_task = 40, 250
    clock = FakeClock()
    breaker = make_breaker(clock, trip)
    probes = Probes()
    seen = {"success": 0, "failure": 0, "rejected": 0, "ignored": 0}

    @breaker
    async def call(action: str) -> None:
        probe = breaker.probe()
        if probe is not None:
            probes.enter(probe)
        try:
            await anyio.lowlevel.checkpoint()  # every call yields while inside
            if action == "failure":
                raise OSError
            if action == "ignored":
                raise KeyError
        finally:
            if probe is not None:
                probes.exit(probe)

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(per_task):
            action = rng.choices(["success", "failure", "ignored"], [65, 30, 5])[0]
            clock.advance(0.0002)
            try:
                await call(action)
            except CircuitOpenError:
                seen["rejected"] += 1
            except OSError:
                seen["failure"] += 1
            except KeyError:
                seen["ignored"] += 1
            else:
                seen["success"] += 1

    async with anyio.create_task_group() as group:
        for i in range(tasks):
            group.start_soon(worker, i)
    check(breaker, seen, probes, tasks * per_task, full=PROBES)


# --- races at a transition ------------------------------------------------------------------------

_TIMED_TOKEN = BreakerState.__dict__["_timed_token"]  # the slot, which `Interleaved` wraps


class SpyLock:
    """A breaker's lock that tells when a caller has to wait for it."""

    def __init__(self, lock: threading.Lock, waiting: threading.Event) -> None:
        self.lock, self.waiting = lock, waiting

    def __enter__(self) -> None:
        if not self.lock.acquire(blocking=False):
            self.waiting.set()
            self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


class Interleaved(CircuitBreaker):
    """Once armed, slips a call in right after a transition to closed publishes its tokens.

    The call runs on another thread, started from inside `_to` (under the lock) as soon as the
    last token is set, and `_to` goes on once that call finished or waits for the lock: the
    moment another thread's call could arrive between two lines of the transition.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.armed = False
        self.settled = threading.Event()
        self.caller: threading.Thread | None = None
        super().__init__(*args, **kwargs)
        self._lock = SpyLock(self._lock, self.settled)  # type: ignore[assignment]

    @property  # type: ignore[override]
    def _timed_token(self) -> int | None:
        return _TIMED_TOKEN.__get__(self, CircuitBreaker)  # type: ignore[no-any-return]

    @_timed_token.setter
    def _timed_token(self, value: int | None) -> None:
        _TIMED_TOKEN.__set__(self, value)
        if self.armed and self.state == "closed":
            self.armed = False
            self.caller = threading.Thread(target=self._succeed)
            self.caller.start()
            self.settled.wait(5)

    def _succeed(self) -> None:
        try:
            with self:
                pass
        finally:
            self.settled.set()


@pytest.mark.parametrize(
    "window",
    [
        pytest.param({"calls": 10}, id="count-window"),
        pytest.param({"calls": 10, "slow_call_duration": 1}, id="count-slow"),
        pytest.param({"seconds": 60}, id="time-window"),
        pytest.param({"seconds": 60, "slow_call_duration": 1}, id="time-slow"),
    ],
)
def test_a_success_that_races_the_closing_lands_in_the_new_window(clock, window) -> None:
    trip = FailureRate(0.5, min_calls=2, **window)
    breaker = Interleaved("r", trip=trip, backoff=Backoff(1, 2, 8, 0), clock=clock)
    for _ in range(2):
        with pytest.raises(OSError), breaker:
            raise OSError
    clock.advance(1.0)
    breaker.armed = True
    with breaker:
        pass  # the probe: it closes the breaker, and the other thread's call slips in
    assert breaker.caller is not None
    breaker.caller.join(5)
    stats = breaker.statistics()
    assert (stats.state, stats.successes) == ("closed", 2)
    assert stats.window_calls == 1  # the other call, which ended after the closing


def test_listeners_hear_transitions_from_two_threads_in_order(clock) -> None:
    breaker = CircuitBreaker(
        "o", trip=ConsecutiveFailures(1), backoff=Backoff(1, 2, 8, 0), clock=clock
    )
    delivering, resume = threading.Event(), threading.Event()
    heard = []

    def slow_listener(b: CircuitBreaker, old: str, new: str) -> None:
        if new == "open":
            delivering.set()
            resume.wait(5)

    breaker.subscribe(slow_listener)
    breaker.subscribe(lambda b, old, new: heard.append((old, new)))

    def trip() -> None:
        with contextlib.suppress(OSError), breaker:
            raise OSError

    opener = threading.Thread(target=trip)
    opener.start()
    assert delivering.wait(5)  # the other thread opened the breaker and is telling the listeners
    breaker.force_closed()  # a second transition, on this thread, meanwhile
    resume.set()
    opener.join(5)
    assert heard == [("closed", "open"), ("open", "closed")]


# --- cancellation ---------------------------------------------------------------------------------


def tripped(clock: FakeClock, **options: Any) -> CircuitBreaker:
    options.setdefault("trip", ConsecutiveFailures(1))
    breaker = CircuitBreaker("x", backoff=Backoff(1, 2, 8, 0), clock=clock, **options)
    with pytest.raises(OSError), breaker:
        raise OSError
    clock.advance(1.0)
    return breaker


@pytest.mark.anyio
async def test_cancelled_probe_releases_its_permit(clock) -> None:
    breaker = tripped(clock)
    started = anyio.Event()

    @breaker
    async def hang() -> None:
        started.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as group:
        group.start_soon(hang)
        await started.wait()
        assert breaker.statistics().probes_in_flight == 1
        with pytest.raises(CircuitOpenError):
            async with breaker:
                pass  # pragma: no cover
        group.cancel_scope.cancel()
    stats = breaker.statistics()
    assert (stats.state, stats.probes_in_flight, stats.ignored, stats.failures) == (
        "half_open",
        0,
        1,
        1,
    )
    async with breaker:  # the permit is free again: this probe closes it
        pass
    assert breaker.state == "closed"


@pytest.mark.anyio
async def test_cancelled_calls_are_neither_success_nor_failure(clock) -> None:
    breaker = CircuitBreaker("x", trip=ConsecutiveFailures(2), clock=clock)
    with pytest.raises(OSError):
        async with breaker:
            raise OSError
    for _ in range(3):
        with anyio.move_on_after(0.01):  # real time: the cancel scope needs a real deadline
            async with breaker:
                await anyio.sleep_forever()
    with pytest.raises(OSError):
        async with breaker:
            raise OSError
    stats = breaker.statistics()
    assert (stats.state, stats.ignored, stats.failures, stats.successes) == ("open", 3, 2, 0)


@pytest.mark.anyio
async def test_cancelled_while_waiting_in_a_timed_breaker(clock) -> None:
    trip = FailureRate(0.5, calls=4, min_calls=1, slow_call_duration=1.0)
    breaker = tripped(clock, trip=trip)  # half-open, timed probes
    with anyio.CancelScope() as scope:
        async with breaker:
            scope.cancel()
            await anyio.sleep_forever()
    assert breaker.statistics().probes_in_flight == 0
    async with breaker:
        pass
    assert breaker.state == "closed"
