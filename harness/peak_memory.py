"""Peak resident memory of one adapter call, for the JSON report.

On Linux, writing ``5`` to ``/proc/self/clear_refs`` resets the process's
resident-memory high-water mark, which ``getrusage`` then reports: about 3 us
per call in all. Elsewhere (or where the reset is refused) the value is the
process's peak so far, an upper bound.
"""

from __future__ import annotations

import os
import resource
import sys

_clear_refs: int | None = None  # an open descriptor of /proc/self/clear_refs, or -1: unavailable
_pid: int | None = None
_SCALE = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux


def reset() -> None:
    """Start a new measurement (the high-water mark becomes the current resident size)."""
    global _clear_refs, _pid
    if _pid != os.getpid():  # first use, or a forked child: its own /proc/self
        _pid, _clear_refs = os.getpid(), None
        try:
            _clear_refs = os.open("/proc/self/clear_refs", os.O_WRONLY)
        except OSError:
            _clear_refs = -1
    if _clear_refs >= 0:
        try:
            os.pwrite(_clear_refs, b"5", 0)
        except OSError:
            _clear_refs = -1


def peak_bytes() -> int:
    """Peak resident bytes since the last ``reset`` (or since the process started)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _SCALE
