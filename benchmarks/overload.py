"""Overload benchmark: the full run of `examples/overload_demo.py`, for docs/benchmarks.md.

Run: `python benchmarks/overload.py` (under 2 minutes on 2 cores; extra options go to the demo,
e.g. `--kinds cpu`). It prints the tables and the verdict and writes nothing: copy the figures
by hand, with the date and the machine.

`--repeats N` runs the whole demo N times in a row and ends with each bar's value in every run,
its median and how many runs met it. The machine is noisy and a bar is judged on one level of
2.5 s, so one run is one sample: the median of repeats is the figure to compare.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from _overload_report import BARS, judge
from overload_demo import execute, parse_args


if TYPE_CHECKING:
    from _overload_report import Judged


def main(argv: list[str]) -> int:
    # No -h of its own: `--help` shows the demo's options, after this one.
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--repeats", type=int, default=1)
    ours, rest = parser.parse_known_args(argv)
    if {"-h", "--help"} & set(rest):
        print("benchmarks/overload.py [--repeats N] [the demo's options]\n")
        print("  --repeats N  whole runs in a row, then each bar's values and median (default 1)\n")
    if ours.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {ours.repeats}")
    args = parse_args(rest)
    runs: list[list[Judged]] = []
    for number in range(1, ours.repeats + 1):
        if ours.repeats > 1:
            print(f"\n######## run {number} of {ours.repeats}")
        rows = execute(args)
        if rows is None:
            return 130
        runs.append(judge(rows))
    if ours.repeats > 1:
        print_summary(runs)
    return 0


def print_summary(runs: list[list[Judged]]) -> None:
    """Each bar: its value in every run, the median, and how many runs met it."""
    print(f"\nSummary of {len(runs)} runs (the protected variant against each bar):")
    for index in range(len(BARS)):
        bars = [run[index] for run in runs]
        measured = [bar for bar in bars if bar.passed is not None]
        if not measured:
            print(f"  {bars[0].name:<48} not measured")
            continue
        met = sum(bar.passed is True for bar in measured)
        values = [bar.value for bar in measured if bar.value is not None]
        numbers = [value for value in values if not math.isnan(value)]  # NaN: no 2xx at all
        median = bars[0].shown(statistics.median(numbers)) if numbers else "-"
        each = ", ".join(bar.shown() for bar in bars)
        print(f"  {bars[0].name:<48} median {median:>9}  met {met}/{len(measured)}  ({each})")
    all_met = sum(all(bar.passed is True for bar in run) for run in runs)
    some_unmeasured = any(bar.passed is None for run in runs for bar in run)
    print(
        f"  => all {len(BARS)} bars met in {all_met} of {len(runs)} runs"
        + (" (some bars not measured: not met)" if some_unmeasured else "")
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
