"""The overload demo's report: one row per (app, server, level), recovery, timelines, verdict.

Split from `overload_demo.py`, which runs the phases; this module only turns records into rows
and rows into text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from _loadgen import DROPPED, ERROR, TIMEOUT, Record, percentile


if TYPE_CHECKING:
    from collections.abc import Sequence

    from _loadgen import LoadGenerator

WINDOW = 0.25  # recovery: sliding window length, seconds
STEP = 0.05  # recovery: window step, seconds
SETTLE = 1.0  # seconds into a level after which its latency is reported apart, if it differs


@dataclass
class Row:
    """One line of the table: one app kind, one server variant, one load level."""

    kind: str
    variant: str
    level: float
    capacity: float
    offered: float = 0.0
    sent: float = 0.0
    goodput: float = 0.0
    shed: float = 0.0  # fraction of offered answered 503
    lost: float = 0.0  # fraction of offered: timeouts + dropped + connection errors
    served: float = 0.0  # fraction of offered answered 2xx
    p50: float = math.nan
    p99: float = math.nan
    p99_all: float = math.nan
    lag_p99: float = 0.0
    server_cpu: float = 0.0  # the server's share of its core during the phase and its drain
    notes: list[str] = field(default_factory=list)
    recovered: float | None = None  # 5x rows: seconds until normal again, None if never seen
    recovery_text: str = ""

    @property
    def cap_pct(self) -> float:
        """Goodput as a percentage of the measured capacity."""
        return 100 * self.goodput / self.capacity


def summarize(row: Row, records: Sequence[Record], begin: float, seconds: float) -> Row:
    """Fill *row* from the records of the requests scheduled in one phase.

    Goodput counts the 2xx answers that *arrived* during the phase, so that answers a backlogged
    server sends after the phase are not credited to it; every other figure is about the
    requests scheduled in the phase, whenever their outcome came.
    """
    end = begin + seconds
    n = len(records) or 1
    ok = [r.latency for r in records if 200 <= r.status < 300]
    answered = [r.latency for r in records if r.status > 0]
    timeouts = sum(r.status == TIMEOUT for r in records)
    dropped = sum(r.status == DROPPED for r in records)
    errors = sum(r.status == ERROR for r in records)
    shed = sum(r.status == 503 for r in records)
    other = len(answered) - len(ok) - shed
    row.offered = len(records) / seconds
    sends = sorted(r.sched + r.lag for r in records)
    span = sends[-1] - sends[0] if len(sends) > 1 else 0.0
    row.sent = (len(sends) - 1) / span if span > 0 else row.offered
    done = sum(1 for r in records if 200 <= r.status < 300 and r.sched + r.latency < end)
    row.goodput, row.served = done / seconds, len(ok) / n
    row.shed, row.lost = shed / n, (timeouts + dropped + errors) / n
    row.p50, row.p99, row.p99_all = percentile(ok, 50), percentile(ok, 99), percentile(answered, 99)
    row.lag_p99 = percentile([r.lag for r in records], 99)
    # A level's first second carries the switch from the last one (the client opening the
    # connections the new rate needs; uvloop accepting them one per loop iteration). Say so
    # when the rest of the level looks very different; the bars still judge the whole level.
    settled = [r.latency for r in records if r.sched >= begin + SETTLE and 200 <= r.status < 300]
    if settled and row.p99 > 2 * percentile(settled, 99) and row.p99 > 0.15:
        row.notes.append(f"p99 2xx after {SETTLE:g} s: {ms(percentile(settled, 99))}")
    if timeouts + dropped + errors:
        row.notes.append(f"t/o {timeouts}, drop {dropped}, err {errors}")
    if other:
        row.notes.append(f"{other} other non-2xx")
    # uvloop's timers tick in whole milliseconds: a lag of a few ms is the clock, not a backlog.
    if row.lag_p99 > 0.005 or row.sent < 0.97 * row.offered:
        row.notes.append(f"GENERATOR BEHIND (send lag p99 {row.lag_p99 * 1e3:.1f} ms)")
    return row


def recovery_time(
    records: Sequence[Record], gen: LoadGenerator, begin: float, horizon: float, limit: float
) -> float | None:
    """Seconds after *begin* from which every 250 ms window up to *horizon* is normal again.

    A window (by scheduled time) is normal when every request scheduled in it has an outcome,
    at least 90% of them are 2xx, and the p99 of those 2xx is at most *limit*. The answer is the
    start of the first window after which all windows are normal, or `None`.
    """
    by_window: dict[int, list[Record]] = {}
    for r in records:
        if begin <= r.sched < horizon:
            first = max(0, math.floor((r.sched - begin - WINDOW) / STEP) + 1)
            for w in range(first, math.floor((r.sched - begin) / STEP) + 1):
                by_window.setdefault(w, []).append(r)
    last = math.floor((horizon - begin - WINDOW) / STEP)
    recovered: float | None = None
    for w in range(last, -1, -1):  # walk back from the end while windows stay normal
        start = begin + w * STEP
        inside = by_window.get(w, [])
        ok = [r.latency for r in inside if 200 <= r.status < 300]
        expected = gen.scheduled_between(start, start + WINDOW)
        if not ok or len(inside) < expected or len(ok) < 0.9 * expected:
            break
        if percentile(ok, 99) > limit:
            break
        recovered = w * STEP
    return recovered


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1e3:.1f}ms"


def print_timeline(records: Sequence[Record], begin: float, end: float) -> None:
    """Per 250 ms of scheduled time: requests, 2xx, 503, unanswered, p99 of the answers."""
    print("      t(s)   sched    2xx    503  lost   p99 answered")
    for k in range(math.ceil((end - begin) / WINDOW)):
        lo = begin + k * WINDOW
        inside = [r for r in records if lo <= r.sched < lo + WINDOW]
        answered = [r.latency for r in inside if r.status > 0]
        ok = sum(1 for r in inside if 200 <= r.status < 300)
        shed = sum(1 for r in inside if r.status == 503)
        print(
            f"    {k * WINDOW:6.2f}{len(inside):8}{ok:7}{shed:7}{len(inside) - len(answered):6}"
            f"{ms(percentile(answered, 99)):>15}"
        )


def format_row(row: Row) -> str:
    """One table line."""
    return (
        f"  {row.variant:<12}{row.level:>4g}x{row.offered:>9.0f}{row.sent:>8.0f}"
        f"{row.goodput:>9.0f}{row.cap_pct:>5.0f}%{row.shed:>7.1%}{row.lost:>7.1%}"
        f"{ms(row.p50):>10}{ms(row.p99):>10}{ms(row.p99_all):>10}{row.server_cpu:>8.0%}"
        f"  {'; '.join(row.notes)}"
    )


BARS = [  # (app kind, load level, Row attribute, ">=" or "<=", limit, what the bar says)
    ("cpu", 5, "cap_pct", ">=", 80, "goodput >= 80% of capacity"),
    ("cpu", 5, "p99", "<=", 0.150, "p99 of 2xx <= 150 ms"),
    ("cpu", 5, "lost", "<=", 0.01, "timeouts + drops <= 1% of offered"),
    ("cpu", 5, "p99_all", "<=", 0.250, "p99 of all answers <= 250 ms"),
    ("cpu", 5, "recovered", "<=", 1.0, "back to normal within 1 s"),
    ("io", 0.5, "served", ">=", 0.99, ">= 99% of offered served"),
    ("io", 1, "served", ">=", 0.99, ">= 99% of offered served"),
    ("io", 2, "cap_pct", ">=", 80, "goodput >= 80% of capacity"),
    ("io", 2, "p99", "<=", 0.150, "p99 of 2xx <= 150 ms"),
]
"""Issue 7's bars for `protect(app)` with its defaults."""
_SHOW = {"cap_pct": "{:.1f}%", "lost": "{:.2%}", "served": "{:.1%}", "recovered": "{:.2f} s"}


@dataclass(frozen=True)
class Judged:
    """One bar of `BARS` against one run: `value` is None when not measured (inf: never)."""

    kind: str
    level: float
    attribute: str
    label: str
    value: float | None
    passed: bool | None  # None: not measured

    @property
    def name(self) -> str:
        return f"{self.kind:>3} {self.level:g}x: {self.label}"

    def shown(self, value: float | None = None) -> str:
        """*value* (default: this run's) as the verdict prints it."""
        value = self.value if value is None else value
        if value is None:
            return "not measured"
        if value == math.inf and self.attribute == "recovered":
            return "never"
        form = _SHOW.get(self.attribute)
        return form.format(value) if form else ms(value)


def judge(rows: Sequence[Row]) -> list[Judged]:
    """The protected variant's rows against each of `BARS`."""
    judged = []
    for kind, level, attribute, sign, limit, label in BARS:
        key = (kind, "protected", level)
        row = next((r for r in rows if (r.kind, r.variant, r.level) == key), None)
        value: float | None = None
        passed: bool | None = None
        if row is not None:
            found: float | None = getattr(row, attribute)
            value = math.inf if found is None else found  # None: never recovered
            passed = value >= limit if sign == ">=" else value <= limit  # NaN fails both
        judged.append(Judged(kind, level, attribute, label, value, passed))
    return judged


def print_verdict(rows: Sequence[Row], protection: str) -> None:
    """Judge the protected variant against `BARS` and print it; information only."""
    print(f"\nVerdict for the protected variant ({protection}):")
    judged = judge(rows)
    for bar in judged:
        result = {True: "PASS", False: "FAIL", None: "n/a "}[bar.passed]
        print(f"  {result}  {bar.kind:>3} {bar.level:g}x: {bar.label:<36} {bar.shown()}")
    failed = sum(bar.passed is False for bar in judged)
    unmeasured = sum(bar.passed is None for bar in judged)
    passed_count = len(judged) - failed - unmeasured
    print(f"  => {passed_count} passed, {failed} failed, {unmeasured} not measured")


def print_harness_checks(rows: Sequence[Row]) -> None:
    """What says the numbers can be trusted: the generator kept up, and overload is visible."""
    print("\nHarness checks:")
    worst = max(rows, key=lambda r: r.lag_p99)
    behind = [r for r in rows if any(n.startswith("GENERATOR") for n in r.notes)]
    noisy = [r for r in rows if any(n.startswith("NOISY") for n in r.notes)]
    print(
        f"  generator send lag p99, worst row: {worst.lag_p99 * 1e3:.2f} ms "
        f"({worst.kind} {worst.variant} {worst.level:g}x); rows behind schedule: {len(behind)}"
    )
    print(
        f"  rows with foreign CPU > 10% of a core on the server's or generator's core: {len(noisy)}"
    )
    if not any(row.variant == "unprotected" for row in rows):
        print("  unprotected levels not run: no collapse to compare with")
    for row in rows:
        if row.variant == "unprotected" and row.level == max(
            r.level for r in rows if r.kind == row.kind
        ):
            collapsed = row.lost > 0.05 or row.p99_all > 1.0
            print(
                f"  unprotected {row.kind} at {row.level:g}x: {row.lost:.0%} unanswered, "
                f"p99 of answers {ms(row.p99_all)}: "
                f"{'collapse visible, as expected' if collapsed else 'NO collapse seen'}"
            )
