"""Server CPU per request behind `protect(app)`, against the bare app, in a real uvicorn.

Run: `python benchmarks/server_cost.py` (about 1 minute; `--kind cpu` for the CPU-bound app).
`--capacity` measures throughput at capacity instead: the best 2xx rate of the overload demo's
closed-loop ramp (16, 128 and 256 connections, 1 s each after 0.3 s), bare and protected
alternating, the median of the rounds: the issue's "at most 5% throughput at 1x", directly.

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


async def _capacity(kind: str, variant: str, spins: int) -> float:
    server = ServerProcess(kind, variant, None, spins)
    server.start()
    try:
        await server.wait_ready()
        async with LoadGenerator("127.0.0.1", server.port) as gen:
            rates = [await gen.run_closed(n, 1.0, 0.3) for n in RAMP]
            gen.close_all()
            return max(rates)
    finally:
        server.stop()


RAMP = (16, 128, 256)  # the overload demo's capacity ramp


async def main(kind: str, rate: float, rounds: int, *, capacity: bool) -> None:
    spins = calibrate(KINDS[kind][0])
    found: dict[str, list[float]] = {"unprotected": [], "protected": []}
    for _ in range(rounds):
        for variant, values in found.items():
            if capacity:
                values.append(await _capacity(kind, variant, spins))
            else:
                values.append(await _cost(kind, variant, spins, rate))
    bare = statistics.median(found["unprotected"])
    if capacity:
        print(f"{kind}-bound app: best 2xx rate of a closed-loop ramp, median of {rounds}")
    else:
        print(f"{kind}-bound app at {rate:g} rps: server CPU per request, median of {rounds}")
    scale, unit = (1.0, "rps") if capacity else (1e6, "us")
    for variant, values in found.items():
        value = statistics.median(values)
        runs = ", ".join(f"{v * scale:.0f}" for v in values)
        print(f"  {variant:12s} {value * scale:6.0f} {unit}  ({value / bare:.3f}x; runs {runs})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--kind", choices=sorted(KINDS), default="io")
    parser.add_argument("--rate", type=float, help="requests/s (default: about half capacity)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--capacity", action="store_true", help="throughput at capacity instead")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1} if (os.cpu_count() or 1) > 1 else {0})
    rate = args.rate or (1000.0 if args.kind == "io" else 250.0)
    asyncio.run(main(args.kind, rate, args.rounds, capacity=args.capacity))
