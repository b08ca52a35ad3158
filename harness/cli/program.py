"""The program's name as the user invoked it, for usage lines and examples."""

from __future__ import annotations

import os
import sys

#: how the module is run when not through the console script
MODULE_FORM = "python -m harness"


def name(command: str = "") -> str:
    """``lossconf`` when run as the console script, else ``python -m harness``; with
    ``command``, that sub-command after it (``lossconf validate``)."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    for suffix in (".exe", "-script.py"):  # the console script's forms on Windows
        invoked = invoked.removesuffix(suffix)
    program = "lossconf" if invoked == "lossconf" else MODULE_FORM
    return f"{program} {command}" if command else program
