"""Overload benchmark: the full run of `examples/overload_demo.py`, for docs/benchmarks.md.

Run: `python benchmarks/overload.py` (under 2 minutes on 2 cores; extra options go to the demo,
e.g. `--kinds cpu`). It prints the tables and the verdict and writes nothing: copy the figures
by hand, with the date and the machine.
"""

from __future__ import annotations

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from overload_demo import main


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
