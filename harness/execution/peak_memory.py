"""Peak resident memory of one adapter call, for the JSON report.

On Linux, writing ``5`` to ``/proc/self/clear_refs`` resets the process's
resident-memory high-water mark (``VmHWM``). ``getrusage`` reports it in about
1 us, but its ``ru_maxrss`` also keeps the peak of the process image that ran
before ``exec`` (a test runner that started the harness, say), which no reset
lowers; when that inherited floor is above the real mark, ``VmHWM`` is read from
``/proc/self/status`` instead (about 30 us). Elsewhere, or where the reset is
refused, the value is the process's peak so far: an upper bound.
"""

from __future__ import annotations

import os
import resource
import sys

_SCALE = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
# per process (a forked child opens its own /proc/self): pid, clear_refs fd, status fd or None
_state: dict = {"pid": None, "clear": -1, "status": None}


def _rusage_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _SCALE


def _status_peak(fd: int) -> int | None:
    data = os.pread(fd, 8192, 0)
    start = data.find(b"VmHWM:")
    if start < 0:
        return None
    return int(data[start + 6 : data.index(b"kB", start)]) * 1024


def _open() -> None:
    _state.update(pid=os.getpid(), clear=-1, status=None)
    try:
        _state["clear"] = os.open("/proc/self/clear_refs", os.O_WRONLY)
        os.pwrite(_state["clear"], b"5", 0)
        status = os.open("/proc/self/status", os.O_RDONLY)
        hwm = _status_peak(status)
        if hwm is not None and _rusage_peak() > hwm + 2**20:  # an inherited floor
            _state["status"] = status
        else:
            os.close(status)
    except OSError:
        _state["clear"] = -1


def _forget() -> None:
    """In a forked child: its files are the parent's /proc/self, opened again on first use."""
    _state.update(pid=None, clear=-1, status=None)


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork
    # so that a call need not compare os.getpid() with the opener's: a child starts afresh
    os.register_at_fork(after_in_child=_forget)


def reset() -> None:
    """Start a new measurement (the high-water mark becomes the current resident size)."""
    if _state["pid"] is None:
        _open()
    if _state["clear"] >= 0:
        try:
            os.pwrite(_state["clear"], b"5", 0)
        except OSError:
            _state["clear"] = -1


def peak_bytes() -> int:
    """Peak resident bytes since the last ``reset`` (or since the process started)."""
    if _state["status"] is not None:
        try:
            hwm = _status_peak(_state["status"])
            if hwm is not None:
                return hwm
        except OSError:
            pass
    return _rusage_peak()
