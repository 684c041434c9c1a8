"""Server CPU per request behind `protect(app)`, against the bare app, in a real uvicorn.

Run: `python benchmarks/server_cost.py` (about 1 minute; `--kind cpu` for the CPU-bound app).

The overload demo's apps and servers (`examples/overload_app.py`: uvicorn with httptools and
uvloop, one worker, pinned to core 0), both with the same CPU burn per request, driven open-loop
from core 1 at a rate well under capacity (nothing is shed), first 1 s not measured. The figure
is the server process's CPU time (user + system) per request; the median of 3 rounds (`--rounds`),
bare and protected alternating. At 1x capacity this decides the throughput `protect()` costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from _loadgen import LoadGenerator
from overload_app import KINDS, CpuMeter, ServerProcess, calibrate


async def _cost(kind: str, variant: str, spins: int, rate: float) -> float:
    server = ServerProcess(kind, variant, None, spins)
    server.start()
    try:
        await server.wait_ready()
        async with LoadGenerator("127.0.0.1", server.port) as gen:
            await gen.run_open([(1.0, rate)], start=time.perf_counter())
            meter = CpuMeter(server)
            await gen.run_open([(4.0, rate)], start=time.perf_counter())
            busy, _, _ = meter.read()
            return busy / rate
    finally:
        server.stop()


async def main(kind: str, rate: float, rounds: int) -> None:
    spins = calibrate(KINDS[kind][0])
    costs: dict[str, list[float]] = {"unprotected": [], "protected": []}
    for _ in range(rounds):
        for variant, values in costs.items():
            values.append(await _cost(kind, variant, spins, rate))
    bare = statistics.median(costs["unprotected"])
    print(f"{kind}-bound app at {rate:g} rps: server CPU per request, median of {rounds}")
    for variant, values in costs.items():
        cost = statistics.median(values)
        runs = ", ".join(f"{v * 1e6:.0f}" for v in values)
        print(f"  {variant:12s} {cost * 1e6:6.0f} us  ({cost / bare:.2f}x; runs {runs})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--kind", choices=sorted(KINDS), default="io")
    parser.add_argument("--rate", type=float, help="requests/s (default: about half capacity)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1} if (os.cpu_count() or 1) > 1 else {0})
    rate = args.rate or (1000.0 if args.kind == "io" else 250.0)
    asyncio.run(main(args.kind, rate, args.rounds))
