"""Entries that tests/test_vocab_parallel.py has the rank launcher fork: what a forked child
sees of the run, and a child that never returns."""

from __future__ import annotations

import os
import sys
import time
from multiprocessing.connection import Connection


def report(conn: Connection, word: str) -> None:
    """Send back what the child sees (its directory, environment, path, main module), print
    ``word`` to its log, and wait for the parent to close the connection."""
    main = sys.modules["__main__"]
    conn.send((os.getcwd(), os.environ.get("LOSSCONF_PROBE"), sys.path[0], main.__name__, word))
    print(f"the probe says {word}", flush=True)
    try:
        conn.recv()
    except EOFError:
        return


def sleep(conn: Connection) -> None:
    conn.send("asleep")
    time.sleep(600)
