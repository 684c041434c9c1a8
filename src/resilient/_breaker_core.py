"""The state machine of `CircuitBreaker`: admission, outcomes, transitions.

```
            trip model says "open"               wait (Backoff) elapsed: next caller probes
  CLOSED ─────────────────────────────▶ OPEN ─────────────────────────────────▶ HALF_OPEN
    ▲                                     ▲                                          │
    │                                     └── too few probes succeeded, or the ──────┤
    │                                         half-open wait expired (n += 1)        │
    └────────────────── enough probes succeeded (n = 0) ─────────────────────────────┘
```

How it stays cheap and correct:

- **Generations.** Every state change bumps `_gen`, and every admitted call carries the generation
  it started in (its token). A result from an older generation is counted in the statistics but
  never moves the state (gobreaker): a slow call that started before the circuit opened cannot
  close it, and a late failure cannot re-open it.
- **The closed success path takes no lock.** `_fast_token` is the current generation while the
  breaker is closed and nothing needs the clock, else `None`; one attribute read admits a call
  (`_timed_token` does the same for timed calls, which also read the clock).
  A success is then one `next()` on an `itertools.count` (a single C call, atomic under the GIL),
  and the consecutive-failure streak is reset under the lock only when it is not already zero: a
  success that reads zero takes effect before any failure that raced it, an order the calls could
  have run in. A count window folds those successes in, in order, under the lock, before it
  records a failure or is read (`_fold`); a transition to CLOSED drops the ones not folded yet,
  and takes that count before it publishes the new generation, so none of the new generation's
  successes is among the dropped (`_to`). A time window does the same for the successes that
  fall in its newest slice.
  (At worst, a thread paused for a whole open/half-open cycle between its generation check and
  its `next()` adds one success to the next window.) Everything else is a short critical section
  on a `threading.Lock`, never held while user code runs (the call, a predicate, a listener, a
  health signal), and never across an `await`.
- **Transitions are announced in order.** `_to` queues each one under the lock, so the queue is
  in the order they happened; after releasing the lock, the thread that caused one announces the
  queue (`_announce`), unless another thread is announcing it already, which then takes the new
  one too before it stops. One thread at a time, outside the lock: listeners hear a breaker's
  transitions one at a time and in order, even when two threads caused them at once.
- **No timer.** OPEN becomes HALF_OPEN when a caller arrives after the wait; windows advance when
  touched.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, NoReturn

from resilient._breaker_signal import check_signal, signal_probe
from resilient._breaker_state import (
    CLOSED,
    DISABLED,
    FORCED_OPEN,
    HALF_OPEN,
    LOCK_FREE,
    METRICS_ONLY,
    OPEN,
    STATES,
    UNRECORDED,
    BreakerState,
    CircuitState,
)
from resilient._counting import count_value
from resilient._errors import CircuitOpenError, is_cancellation
from resilient._trip import as_delay, classify_result
from resilient.metrics._catalog import CIRCUIT_BREAKER_TRANSITIONS, NAME


if TYPE_CHECKING:
    from collections.abc import Callable

    from resilient._breaker_state import Listener
    from resilient._window import CountWindow, TimeWindow


__all__ = ["BreakerCore"]

_log = logging.getLogger("resilient.circuit_breaker")

# `BaseException.__new__` sets `args` as `__init__` would; the fields are set by hand. Same
# exception, 150 ns cheaper (RejectedError.__init__ is Python code with a super() call).
_new_error = CircuitOpenError.__new__


class BreakerCore(BreakerState):
    """The state machine behind `CircuitBreaker`: admission, outcomes, transitions."""

    __slots__ = ()

    # --- the hooks (hot path first) ------------------------------------------------------------

    def _enter(self) -> Any:
        token = self._fast_token
        if token is not None:
            return token
        gen = self._timed_token
        if gen is not None:
            return gen, self._now()
        if self._state == OPEN:
            # Rejecting is the hot path while a dependency is down: raise from here (every frame
            # the exception passes costs a traceback entry) and skip the error's Python __init__.
            retry_after = self._open_until - self._now()
            if retry_after > 0:
                next(self._n_rejected)
                name = self.name
                exc = _new_error(CircuitOpenError, name, retry_after)
                exc.name, exc.retry_after = name, retry_after
                raise exc
        return self._admit()

    _enter_nowait = _enter

    def _exit_ok(self, token: Any, result: object) -> None:
        if token == self._fast_token:
            if self._fast_ok:
                next(self._n_success_fast)
                if self._streak:
                    self._clear_streak(token)
                return
            window = self._time_window
            if window is not None:
                # A plain success in a time window: count it without the lock while it falls
                # in the window's newest slice; the first one of each new slice takes the lock.
                if self._now() // window.width == window.epoch:
                    next(self._n_success_fast)
                    return
                self._record(token, False, None)  # noqa: FBT003 - a hot path: no keywords
                return
        self._finish(token, result, None)

    def _exit_error(self, token: Any, exc: BaseException) -> None:
        self._finish(token, None, exc)

    # --- admission -----------------------------------------------------------------------------

    def _admit(self) -> Any:
        # Read the generation before the state: a token can then only be older than the state
        # it was admitted in, which makes it stale rather than wrongly current.
        gen = self._gen
        state = self._state
        if state in (CLOSED, METRICS_ONLY):
            if self._signal is not None and state == CLOSED:
                check_signal(self, gen)
            return gen if self._slow_after is None else (gen, self._now())
        if state == DISABLED:
            return UNRECORDED
        if state == FORCED_OPEN:
            self._reject(None)
        return self._probe(self._now())  # OPEN (the wait is over, `_enter` saw) or HALF_OPEN

    def _reject(self, retry_after: float | None) -> NoReturn:
        next(self._n_rejected)
        name = self.name
        exc = _new_error(CircuitOpenError, name, retry_after)
        exc.name, exc.retry_after = name, retry_after
        raise exc

    def _probe(self, now: float) -> Any:
        """Take a half-open permit (opening the half-open state if the wait is over), or reject."""
        token: Any = None
        retry_after: float | None = None
        with self._lock:
            state = self._state
            if state == OPEN and self._open_until <= now:
                self._to(HALF_OPEN, now)
                state = HALF_OPEN
            if state == HALF_OPEN:
                if self._probes_left > 0:
                    self._probes_left -= 1
                    token = self._gen if self._slow_after is None else (self._gen, now)
                elif (
                    self._half_open_timeout is not None
                    and now - self._half_open_since >= self._half_open_timeout
                ):
                    self._open(now, None)
                    retry_after = self._open_until - now
            elif state == OPEN:
                retry_after = self._open_until - now
            else:
                token = self  # the state moved on while we were not looking: start again
        self._announce()
        if token is self:
            return self._enter()
        if token is None:
            self._reject(retry_after)
        if self._signal is not None:
            return signal_probe(self, token, now)
        return token

    # --- outcomes ------------------------------------------------------------------------------

    def _clear_streak(self, token: int) -> None:
        with self._lock:
            if token == self._gen:
                self._streak = 0

    def _finish(self, token: Any, result: object, exc: BaseException | None) -> None:
        """Classify an outcome outside the lock (user predicates may run), then record it."""
        if token == UNRECORDED:
            return
        if exc is None and self._result_pred is None:
            self._record(token, False, None)  # noqa: FBT003 - a hot path: no keywords
            return
        try:
            if exc is None:
                failed, retry_after = classify_result(self._result_pred, result)  # type: ignore[arg-type]
            elif is_cancellation(exc) or _matches(exc, self._ignore_types, self._ignore_preds):
                self._record_ignored(token)
                return
            else:
                failed = _matches(exc, self._record_types, self._record_preds)
                retry_after = as_delay(getattr(exc, "retry_after", None)) if failed else None
        except Exception:  # noqa: BLE001 - a broken predicate must not break the caller
            _log.exception(
                "an outcome filter of circuit breaker %r raised; counted as failure", self
            )
            failed, retry_after = True, None
        self._record(token, failed, retry_after)

    def _record_ignored(self, token: Any) -> None:
        gen = token if type(token) is int else token[0]
        with self._lock:
            self._n_ignored += 1
            if gen == self._gen and self._state == HALF_OPEN:
                self._probes_left += 1  # a cancelled probe gives its permit back

    def _record(self, token: Any, failed: bool, retry_after: float | None) -> None:
        if type(token) is int:
            gen, slow = token, False
            now = self._now() if self._window_needs_now else 0.0
        else:
            # A timed token: only handed out when `_slow_after` is set (a positive number).
            gen, start = token
            now = self._now()
            slow = now - start > self._slow_after
        # A plain success while closed: count it without the lock, as `_exit_ok` does (with a
        # time window, only while it falls in the newest slice).
        window: Any = self._window  # a `TimeWindow` whenever `_window_needs_now`
        if (
            not (failed or slow)
            and gen == self._closed_gen
            and LOCK_FREE
            and (not self._window_needs_now or now // window.width == window.epoch)
        ):
            next(self._n_success_fast)
            if self._streak:
                self._clear_streak(gen)
            return
        with self._lock:
            if failed:
                self._n_failure += 1
            elif slow:
                self._n_slow += 1
            else:
                self._n_success += 1
            # A stale result is counted, but it never moves the state.
            event = self._judge(now, failed, slow, retry_after) if gen == self._gen else None
        if event is not None:
            self._announce()

    def _judge(
        self, now: float, failed: bool, slow: bool, retry_after: float | None
    ) -> tuple[int, int] | None:
        """Apply a current-generation outcome to the state; return the transition (locked)."""
        state = self._state
        if state == HALF_OPEN:
            if failed or slow:
                self._probe_fail += 1
                if self._probe_fail > self._probes - self._needed:
                    return self._open(now or self._now(), retry_after)
            else:
                self._probe_ok += 1
                if self._probe_ok >= self._needed:
                    self._attempts = 0  # recovered: the next opening waits the shortest time
                    return self._to(CLOSED, now)
            return None
        # Besides HALF_OPEN, only CLOSED and METRICS_ONLY hand out tokens of their generation.
        if self._tripped(now, failed, slow) and state == CLOSED:
            return self._open(now or self._now(), retry_after)
        return None

    def _tripped(self, now: float, failed: bool, slow: bool) -> bool:
        """Record a current-generation outcome in the trip model; tell if it trips (locked)."""
        window = self._window
        if window is None:
            if self._streak_limit:
                self._streak = self._streak + 1 if failed else 0
                return failed and self._streak >= self._streak_limit
            return False  # a health signal: outcomes are only counted
        self._fold(window)
        window.record(now, failed, slow)
        if not (failed or slow) or window.calls < self._min_calls:
            return False
        calls = window.calls
        return window.failures >= self._rate * calls or (
            self._slow_after is not None and window.slow >= self._slow_rate * calls
        )

    def _fold(self, window: CountWindow | TimeWindow) -> None:
        """Move the successes the lock-free path counted into the window (locked).

        A count window appends them; a time window adds them to its newest slice, which is the
        slice they were counted for (the lock-free path checks), so fold before advancing it.
        """
        done = count_value(self._n_success_fast)
        pending, self._folded = done - self._folded, done
        if pending:
            window.record_successes(pending)

    # --- transitions (under the lock) ----------------------------------------------------------

    def _to(self, new: int, now: float) -> tuple[int, int]:
        """Move to state *new*, and queue the transition for `_announce` (locked)."""
        old = self._state
        if new in (CLOSED, METRICS_ONLY):
            # A fresh window. Drop the lock-free successes not folded yet (they belong to the
            # generation that ends here), and empty the window, BEFORE the tokens below publish
            # the new generation: from then on, other threads count its successes without the
            # lock, and one that came in between would be taken for an old one and dropped (or,
            # for a time window, folded into a slice that the clear then discards).
            self._folded = count_value(self._n_success_fast)
            self._streak = 0
            if self._window is not None:
                self._window.clear()
        self._state = new
        self._gen += 1
        closed = self._gen if new == CLOSED else None
        self._closed_gen = closed
        self._fast_token = closed if self._fast_enter else None
        self._timed_token = (
            closed if self._signal is None and self._slow_after is not None else None
        )
        if new == HALF_OPEN:
            self._probes_left = self._probes
            self._probe_ok = self._probe_fail = 0
            self._half_open_since = now
        if old != new:  # `reset()` of a closed breaker is no transition
            self._events.append((old, new))
        return old, new

    def _open(self, now: float, retry_after: float | None) -> tuple[int, int]:
        self._attempts += 1
        wait = self._backoff.delay(self._attempts, self._rng)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self._backoff.maximum))
        self._open_until = now + wait
        return self._to(OPEN, now)

    def _announce(self) -> None:
        """Publish the queued transitions in order: the metric, then each listener (not locked).

        Call it after releasing the lock, having queued a transition or not. One thread at a
        time announces: if another one is at it, it returns at once, and that thread announces
        the new transitions too, after the ones before them. Listener errors are logged; a
        `BaseException` (KeyboardInterrupt) reaches the caller, and the transitions still queued
        wait for the next announcement.
        """
        if not self._events:  # nothing queued, or the announcing thread took it already
            return
        with self._lock:
            if self._announcing:
                return
            self._announcing = True
        try:
            while True:
                with self._lock:
                    if not self._events:
                        self._announcing = False
                        return
                    old, new = self._events.popleft()
                self._publish(old, new)
        except BaseException:
            with self._lock:
                self._announcing = False
            raise

    def _publish(self, old: int, new: int) -> None:
        attrs = self._transition_attrs.get((old, new))
        if attrs is None:
            attrs = {NAME: self.name or "", "from": STATES[old], "to": STATES[new]}
            self._transition_attrs[old, new] = attrs
        self._emit(CIRCUIT_BREAKER_TRANSITIONS, 1, attrs)
        old_name, new_name = STATES[old], STATES[new]
        for listeners in self._listener_lists:
            for listener in tuple(listeners):
                _notify(listener, self, old_name, new_name)


def _matches(
    exc: BaseException,
    types: tuple[type[BaseException], ...],
    predicates: tuple[Callable[[BaseException], bool], ...],
) -> bool:
    return isinstance(exc, types) or any(p(exc) for p in predicates)


def _notify(listener: Listener, breaker: BreakerCore, old: CircuitState, new: CircuitState) -> None:
    try:
        listener(breaker, old, new)
    except Exception:  # noqa: BLE001 - a broken listener must not break the breaker
        _log.exception("a listener of circuit breaker %r raised", breaker)
