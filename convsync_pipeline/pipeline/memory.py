"""How much memory a step of this process took at its peak, for run metadata."""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator
from dataclasses import dataclass

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


@dataclass
class PeakMemory:
    """The resident memory high-water mark over a block, in MB; `since_start` when the
    operating system could not reset it (then it is the process's peak so far)."""

    mb: float = 0.0
    since_start: bool = False


@contextlib.contextmanager
def peak_memory() -> Iterator[PeakMemory]:
    """Linux resets a process's high-water mark on request (`clear_refs` "5"): the peak is
    then the block's own, not that of whatever ran before it in the process."""
    peak = PeakMemory()
    try:
        with open(_CLEAR_REFS, "w") as handle:
            handle.write("5")
    except OSError:
        peak.since_start = True
    try:
        yield peak
    finally:
        peak.mb = round(_high_water_kb() / 1024, 1)


def _high_water_kb() -> int:
    try:
        with open(_STATUS) as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
