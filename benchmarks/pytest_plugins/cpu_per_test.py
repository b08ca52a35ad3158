"""A pytest plugin of ``benchmarks/bench_tests.py``: the CPU and wall seconds of each test.

Loaded with ``-p cpu_per_test`` (this folder on PYTHONPATH); pytest-xdist's workers load it
too. Each process appends one line per test to ``$LOSSCONF_BENCH_TEST_LOG/<pid>.tsv``: the
test's id, its CPU seconds in this process (user + system, its fixtures' set-up and
tear-down included), those of the subprocesses it waited for, and its wall seconds; and when
the process ends, a line with its own CPU seconds.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    own, children, start = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN), time.time()
    yield
    own = _cpu(resource.RUSAGE_SELF) - own
    children = _cpu(resource.RUSAGE_CHILDREN) - children
    log = Path(os.environ["LOSSCONF_BENCH_TEST_LOG"]) / f"{os.getpid()}.tsv"
    with log.open("a") as f:
        f.write(f"{item.nodeid}\t{own:.3f}\t{children:.3f}\t{time.time() - start:.3f}\n")


def pytest_unconfigure(config: pytest.Config) -> None:
    """A last line: this process's own CPU seconds so far (start-up and collection included;
    written by pytest-xdist's controller too, which runs no test)."""
    log = Path(os.environ["LOSSCONF_BENCH_TEST_LOG"]) / f"{os.getpid()}.tsv"
    with log.open("a") as f:
        f.write(f"#process\t{_cpu(resource.RUSAGE_SELF):.3f}\n")
