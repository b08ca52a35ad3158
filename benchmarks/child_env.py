"""The environment of the benchmarks' child interpreters, and the timing of one
(``run_timed``: wall time, and the CPU time of the child and its own children).

A child runs with Python's bytecode cache on, as on a usual install (pip compiles an
installed package's modules; an editable install's are compiled by their first import):
a ``PYTHONDONTWRITEBYTECODE`` in the environment is left out. With it, every interpreter
compiles lossconf's modules again and pytest redoes the assertion rewriting of its plugins'
modules in every session; on the development machine, whose environment sets it, that is
about 0.2 s per start of ``python -m harness`` and a second per pytest session, which no
user of an installed lossconf pays. The first, untimed run of each benchmark writes the
``.pyc`` files. ``--keep-bytecode-env`` keeps the environment as it is.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def child_env(keep_bytecode_env: bool = False, **extra: str) -> dict[str, str]:
    """``os.environ`` with ``extra`` set, without PYTHONDONTWRITEBYTECODE unless kept."""
    env = {**os.environ, **extra}
    if not keep_bytecode_env:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def add_option(parser) -> None:
    """The ``--keep-bytecode-env`` option of a benchmark that starts interpreters."""
    parser.add_argument(
        "--keep-bytecode-env",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE for the child interpreters (default: left out)",
    )


def run_timed(
    cmd: list[str], env: dict[str, str], cwd: Path | str | None = None
) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Run ``cmd`` (output captured as text): its wall seconds, the user + system CPU seconds
    of it and the processes it waited for, and the finished process (exit status unchecked)."""
    before, start = os.times(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall, after = time.perf_counter() - start, os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu, proc
