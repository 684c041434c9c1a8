"""What the decorator core costs per call, against the alternatives it was chosen over.

Compares, in one run, a bare call; a `functools.wraps` closure (the floor for any decorator); a
`wrapt.FunctionWrapper` passthrough; and the core (`resilient._wrap`) around a policy whose hooks do
nothing, so only the core itself is measured. Sync and async. Bar: the core's overhead is at most
2x the closure's.

Run: `taskset -c 1 python benchmarks/overhead.py`
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import wrapt


sys.path.insert(0, str(Path(__file__).parent))

from _timing import async_runner, measure, report, sync_runner

from resilient._wrap import Policy


class Passthrough(Policy[None]):
    """A policy that admits everything and records nothing: the core's own cost."""

    __slots__ = ()

    def _enter(self) -> None:
        return None

    def _exit_ok(self, token: None, result: object) -> None:
        pass

    def _exit_error(self, token: None, exc: BaseException) -> None:
        pass


def closure(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def async_closure(fn: Any) -> Any:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    return wrapper


@wrapt.decorator
def wrapt_passthrough(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return wrapped(*args, **kwargs)


@wrapt.decorator
async def wrapt_async_passthrough(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return await wrapped(*args, **kwargs)


def f(x: int) -> int:
    return x + 1


async def af(x: int) -> int:
    return x + 1


def main() -> int:
    policy = Passthrough()
    sync = measure(
        {
            "bare call": sync_runner(f),
            "functools.wraps closure": sync_runner(closure(f)),
            "wrapt.FunctionWrapper passthrough": sync_runner(wrapt_passthrough(f)),
            "resilient core (no-op policy)": sync_runner(policy(f)),
        }
    )
    report("sync", sync, "bare call")
    asyn = measure(
        {
            "bare await": async_runner(af),
            "functools.wraps async closure": async_runner(async_closure(af)),
            "wrapt async passthrough": async_runner(wrapt_async_passthrough(af)),
            "resilient core (no-op policy)": async_runner(policy(af)),
        }
    )
    report("async (asyncio)", asyn, "bare await")

    ok = True
    for label, results, base, floor, core in (
        ("sync", sync, "bare call", "functools.wraps closure", "resilient core (no-op policy)"),
        (
            "async",
            asyn,
            "bare await",
            "functools.wraps async closure",
            "resilient core (no-op policy)",
        ),
    ):
        ratio = (results[core] - results[base]) / (results[floor] - results[base])
        passed = ratio <= 2.0
        ok &= passed
        print(
            f"{label}: core overhead / closure overhead = {ratio:.2f} "
            f"(bar <= 2.0: {'PASS' if passed else 'FAIL'})"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
