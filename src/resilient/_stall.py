"""What the loop monitor reports when the event loop stops answering: a `Stall`.

The loop thread's stack is sampled from the watchdog thread (`sys._current_frames()`) while the
loop is stuck, walked at once into plain `FrameSummary` records (no frame is kept alive), and
classified:

- **blocked**: the loop thread is running Python code (a callback or task step that does not
  yield: `time.sleep`, a CPU-bound loop, a blocking client);
- **starved**: the loop thread sits in its selector, ready to run the late heartbeat, but does not
  get to run: another thread holds the GIL, or the host is short of CPU.
"""

from __future__ import annotations

import sysconfig
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal


if TYPE_CHECKING:
    from types import FrameType


__all__ = ["Stall", "StallKind", "capture_stall"]

StallKind = Literal["blocked", "starved"]

# Library code, resilient's own included: where the culprit is *not* (unless nothing else is).
_LIBRARY_DIRS = tuple(
    {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    | {str(Path(__file__).parent)}
)
# Innermost frames that mean "waiting for I/O": asyncio's selector, trio's epoll/kqueue/IOCP waits.
_WAITING = (
    ("selectors.py", "select"),
    ("_io_epoll.py", "get_events"),
    ("_io_kqueue.py", "get_events"),
)


@dataclass(frozen=True)
class Stall:
    """One episode of the event loop not answering within the stall threshold.

    Attributes:
        started: when the unanswered heartbeat was posted (`time.perf_counter()` seconds).
        duration: how long the loop took to answer it; `None` while the stall goes on.
        kind: `blocked` (running Python code) or `starved` (waiting in its selector while late).
        stack: the loop thread's stack when the stall was detected, outermost frame first.
    """

    started: float
    duration: float | None
    kind: StallKind
    stack: tuple[traceback.FrameSummary, ...]

    @property
    def culprit(self) -> traceback.FrameSummary | None:
        """The innermost frame of application code: not stdlib, installed packages or resilient.

        Falls back to the innermost frame of all when the whole stack is library code.
        """
        for frame in reversed(self.stack):
            if not frame.filename.startswith(_LIBRARY_DIRS):
                return frame
        return self.stack[-1] if self.stack else None

    def ended(self, duration: float) -> Stall:
        """Return this stall with its final *duration*."""
        return replace(self, duration=duration)

    def format(self) -> str:
        """Render the stall as a short headline followed by the stack, like a traceback."""
        culprit = self.culprit
        where = f"{culprit.name} ({culprit.filename}:{culprit.lineno})" if culprit else "unknown"
        took = "still going" if self.duration is None else f"{self.duration * 1000:.0f} ms"
        head = f"event loop {self.kind} ({took}) in {where}"
        return head + "\n" + "".join(traceback.format_list(list(self.stack))).rstrip("\n")


def capture_stall(frame: FrameType | None, started: float) -> Stall:
    """Walk *frame* (the loop thread's current frame) into a `Stall`, keeping no frame alive."""
    stack = tuple(traceback.extract_stack(frame)) if frame is not None else ()
    return Stall(started=started, duration=None, kind=_classify(stack), stack=stack)


def _classify(stack: tuple[traceback.FrameSummary, ...]) -> StallKind:
    if stack:
        innermost = stack[-1]
        for filename, function in _WAITING:
            if innermost.filename.endswith(filename) and innermost.name == function:
                return "starved"
    return "blocked"
