"""The exception tree: one `RejectedError` to catch, cheap to raise, readable when printed."""

from __future__ import annotations

import pickle

import anyio
import pytest

from resilient import (
    CircuitOpenError,
    ConcurrencyLimitError,
    RejectedError,
    ResilientError,
    WorkerCrashedError,
)
from resilient._errors import is_cancellation


def test_tree() -> None:
    assert issubclass(RejectedError, ResilientError)
    assert issubclass(CircuitOpenError, RejectedError)
    assert issubclass(ConcurrencyLimitError, RejectedError)
    assert issubclass(WorkerCrashedError, ResilientError)
    assert not issubclass(WorkerCrashedError, RejectedError)
    assert issubclass(ResilientError, Exception)


def test_rejections_carry_name_and_retry_after() -> None:
    err = CircuitOpenError("payments", 2.5)
    assert err.name == "payments"
    assert err.retry_after == 2.5
    assert str(err) == "'payments': circuit open; retry after 2.500s"
    assert repr(err) == "CircuitOpenError(name='payments', retry_after=2.5)"
    assert str(ConcurrencyLimitError()) == "concurrency limit reached"
    assert str(RejectedError(retry_after=1)) == "call rejected; retry after 1.000s"


def test_rejections_pickle_round_trip() -> None:
    err = ConcurrencyLimitError("db", 0.25)
    clone = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own bytes
    assert type(clone) is ConcurrencyLimitError
    assert (clone.name, clone.retry_after) == ("db", 0.25)


def test_plain_errors_are_not_cancellation() -> None:
    assert not is_cancellation(ValueError())
    assert not is_cancellation(TimeoutError())
    assert not is_cancellation(CircuitOpenError())


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(), GeneratorExit()])
def test_interpreter_exits_are_cancellation(exc: BaseException) -> None:
    assert is_cancellation(exc)


@pytest.mark.anyio
async def test_backend_cancellation_is_cancellation() -> None:
    caught: list[BaseException] = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.sleep(1)
        except anyio.get_cancelled_exc_class() as exc:
            caught.append(exc)
            raise
    assert len(caught) == 1
    assert is_cancellation(caught[0])
