"""The exit codes of every lossconf command and of the pytest-free CLI, defined once.

A CI gate reads them: 1 must only ever mean "the implementation does not conform"
(or regressed, or the fuzzer found a failing call); a broken input is 2.
"""

from __future__ import annotations

import signal
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # every result conforms (or: nothing found, nothing changed)
    NONCONFORMING = 1  # a result does not conform, a regression, a fuzz finding, a stale file
    USAGE = 2  # usage error, invalid case or expectations file, adapter that cannot load
    INTERRUPTED = 128 + signal.SIGINT  # Ctrl-C; other signals give 128 + their number


def interrupted_by(signum: int) -> int:
    """The exit code of a run stopped by signal ``signum`` (the shell's convention)."""
    return 128 + signum
