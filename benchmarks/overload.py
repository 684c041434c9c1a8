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
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=1, help="whole runs in a row (default 1)")
    ours, rest = parser.parse_known_args(argv)
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
    all_passed = sum(all(bar.passed is not False for bar in run) for run in runs)
    for index in range(len(BARS)):
        bars = [run[index] for run in runs]
        first = bars[0]
        values = [bar.value for bar in bars if bar.value is not None and not math.isnan(bar.value)]
        if not values:
            print(f"  {first.name:<48} not measured")
            continue
        met = sum(bar.passed is True for bar in bars)
        each = ", ".join(bar.shown() for bar in bars)
        median = first.shown(statistics.median(values))
        print(f"  {first.name:<48} median {median:>9}  met {met}/{len(bars)}  ({each})")
    print(f"  => every bar met in {all_passed} of {len(runs)} runs")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
