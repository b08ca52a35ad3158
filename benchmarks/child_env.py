"""The environment of the benchmarks' child interpreters.

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
