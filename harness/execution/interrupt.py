"""Ctrl-C and SIGTERM during a run: stop cleanly and keep what ran.

While ``signals_stop_the_run()`` is active, SIGINT and SIGTERM raise
``Interrupted`` in the main thread (a ``KeyboardInterrupt``, so an adapter's
``except Exception`` cannot swallow it). The run stops after the call in
progress, the terminal and file reports are written for the results so far,
with ``"complete": false`` in the JSON report, and the exit code is
128 + the signal number: 130 for SIGINT (Ctrl-C), 143 for SIGTERM. Workers of
``--isolate`` ignore SIGINT and are stopped by the harness. A second signal
while the reports are written stops at once (report files are written
atomically, so none is left half-written).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from harness.exit_codes import ExitCode, interrupted_by

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; ``exit_code`` is 128 + its number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = interrupted_by(signum)
        super().__init__(signal.Signals(signum).name)


def _raise(signum: int, frame: object) -> None:
    # a second signal gets the default behaviour: stop now
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_stop_the_run() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into ``Interrupted`` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in HANDLED}
    for s in HANDLED:
        signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def exit_code(error: KeyboardInterrupt) -> int:
    """130 for a plain KeyboardInterrupt (SIGINT), 128 + the signal for ``Interrupted``."""
    return getattr(error, "exit_code", int(ExitCode.INTERRUPTED))
