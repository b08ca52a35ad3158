"""The command line's exit: its code, without tearing the interpreter down.

At the end of a run, Python frees every module and object one by one before the process
ends: with torch, numba and the harness loaded, and a large case's arrays, that took about a
second of a run's wall time (``docs/performance.md``, LLM-scale cases). The system takes the
whole process's memory back at once anyway. So the two entry points (``python -m harness``,
the ``lossconf`` script) exit with ``os._exit`` once the command has returned and every
exit handler registered after the start has run: those that stop the processes a run
started (multiprocessing's, concurrent.futures'), logging's, an adapter's own. Standard
output and standard error are flushed first; files the harness writes are closed by then.
A command that raises exits as usual. ``main(argv)`` called from Python (the tests, a
script of the user's) never exits this way; nor does a process in which exit handlers were
registered before the entry point ran (``coverage run -m harness`` saves its data in one,
a ``sitecustomize`` may register others): they would be skipped.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from collections.abc import Callable
from typing import NoReturn


class _Exit:
    """The last exit handler: ends the process with ``code`` once it is set."""

    def __init__(self) -> None:
        self.code: int | None = None

    def __call__(self) -> None:
        if self.code is None:
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe: nothing more to say there
                stream.flush()
        os._exit(self.code)


def run(main: Callable[[], int]) -> NoReturn:
    """Register the handler, then run the command (``main`` imports it: every handler its
    imports register runs before this one) and exit with its code."""
    quick = _Exit()
    earlier = _handlers()
    atexit.register(quick)
    code = main()
    if earlier == 0:
        quick.code = code
    sys.exit(code)


def _handlers() -> int:
    """How many exit handlers are registered (CPython tells; elsewhere, assume some)."""
    count = getattr(atexit, "_ncallbacks", None)
    return count() if callable(count) else 1


def entry() -> NoReturn:
    """The ``lossconf`` script and ``python -m harness``."""

    def command() -> int:
        from harness.cli.main import main  # after the handler: see ``run``

        return main()

    run(command)
