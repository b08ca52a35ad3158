"""Expected values computed on a second core while the run goes on.

A run needs the expected values of every ``expected: oracle`` case it checks. Those that
neither the built-in suite's frozen data nor the disk cache holds (a first run, or a
user's new case files) are computed when the run reaches their case, on the run's one
core, while any other core waits. ``helping`` forks one helper process that computes them
too, from the last case backwards, and stores each in the disk cache
(``harness.oracle.cache``); the run, going forwards, takes first a case whose values the
helper has all stored (``Prefetch.ready``; the run calls adapters while the helper works),
else the first left, reads from the disk what the helper has stored, waits for one it is
computing, and computes the others itself. The two meet in the middle: no value is computed
twice, and each side's share follows from their speeds.

The values are the same bits whichever process computes them (the same code on the same
inputs; the cache's files are what a later run reads anyway). The helper computes only
the values of PyTorch's semantics (those of most adapters; another dialect's keys are
computed by the run), and only of problems of moderate size, which the NumPy oracle
serves in one process (a large one is streamed by the run, block by block).

It is started only where it can help and cannot harm: on Linux (a fork: the helper
inherits the loaded cases) while no threaded framework is imported and no other Python
thread runs (the command line starts it before the adapters load their frameworks),
with a disk cache (the helper's values reach the run through it), more than one core
available, a serial run (``--jobs`` workers share values through the cache already), and
enough work (``MIN_LOGITS``: a fork and its pages cost a few milliseconds). The helper
ignores Ctrl-C (the run stops it); if it dies, the run computes what it left.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from harness import cores
from harness.cache_folder import cache_dir
from harness.cases.model import Case
from harness.execution import streaming
from harness.execution.config import RunConfig
from harness.execution.parallel import start_method
from harness.oracle import cache, compiled

#: an item's state in the shared array
FREE, HELPER, DONE, FAILED, RUN = 0, 1, 2, 3, 4

#: below this many logits in all the pending problems, no helper is started
MIN_LOGITS = 100_000

#: the run waits for a value the helper is computing at most this long, plus this much per
#: logit: about twice what the NumPy oracle takes itself on this suite's problems (0.2 to 0.5
#: us a logit, values and bounds). A helper that takes longer (compiling numba's kernels
#: after an install, or short of CPU) leaves the value to the run, which is then no slower
#: than without a helper
PATIENCE_S = 0.05
PATIENCE_S_PER_LOGIT = 1e-6

#: in the helper, problems from this many logits take the compiled oracle (when numba is
#: installed and its kernels are in numba's disk cache: compiling them takes seconds):
#: loading it costs the helper a few tenths of a second on its own core, and saves more on
#: the suite's problems of a few hundred thousand logits
HELPER_MIN_LOGITS = 1 << 16

Item = tuple[str, str, str]  # kind ('ce' or 'linear'), key, dtype


def _size(case: Case) -> int:
    """Logits (a fused linear case: classifier elements) of one of ``case``'s problems."""
    return case.linear_size if case.fused else case.logits_size


def pending_items(cases: list[Case]) -> list[tuple[Item, Case]]:
    """The values the run will compute, in the order it needs them: each ``expected: oracle``
    case's, PyTorch's semantics, per dtype, neither in memory (frozen data) nor on disk; of
    the size the NumPy oracle serves in one process."""
    out: list[tuple[Item, Case]] = []
    for case in cases:
        if case.expect_error is not None:
            continue
        if case.fused:
            for dtype in case.dtypes:
                if cache.pending_linear(case.content_hash, dtype, case.linear_size):
                    out.append((("linear", case.content_hash, dtype), case))
            continue
        if (
            case.expected is not None
            or case.logits_size >= compiled.MIN_LOGITS
            or streaming.applies(case)
        ):
            continue
        for dtype in case.dtypes:
            if cache.pending(case.content_hash, dtype):
                out.append((("ce", case.content_hash, dtype), case))
    return out


def _compiled_from(logits: int) -> None:
    """Let problems from ``logits`` logits take the compiled oracle, on one thread (the run
    has the other core). The values and their bounds are the same bits on either path
    (``tests/test_oracle_compiled.py``)."""
    compiled.set_threads(1)
    compiled.MIN_LOGITS = logits


def _single_threaded() -> bool:
    """Whether this process runs no Python thread but the main one: a fork copies none of
    them, and a lock one of them holds would stay held in the helper (Python 3.12 warns of
    any fork beside threads). The command line forks before it starts any."""
    return threading.active_count() == 1


class Prefetch:
    """The helper process and the items' states it shares with the run."""

    def __init__(self, items: list[tuple[Item, Case]]) -> None:
        ctx = multiprocessing.get_context("fork")
        self.items = items
        self.index = {item: i for i, (item, _) in enumerate(items)}
        #: the positions of each case's items; its keys, the cases the run takes last
        self._case_items: dict[str, list[int]] = {}
        for i, (_, case) in enumerate(items):
            self._case_items.setdefault(case.id, []).append(i)
        self.case_ids = frozenset(self._case_items)
        self.state: Any = ctx.Array("b", len(items))  # FREE each; with a lock
        self.process = ctx.Process(target=self._work, name="lossconf-prefetch", daemon=True)

    # -- in the helper ---------------------------------------------------------------------

    def _claim_from_end(self, i: int) -> bool:
        with self.state.get_lock():
            if self.state[i] != FREE:
                return False
            self.state[i] = HELPER
            return True

    def _work(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run handles Ctrl-C and stops us
        cache.set_helper(None)
        # asking numba's cache imports numba (a few tenths of a second): only for a value the
        # compiled oracle may serve
        large = any(_size(case) >= HELPER_MIN_LOGITS for _, case in self.items)
        if large and compiled.available() and compiled.kernels_cached():
            _compiled_from(HELPER_MIN_LOGITS)
        for i in range(len(self.items) - 1, -1, -1):
            if not self._claim_from_end(i):
                return  # the run has come this far: the rest is its own
            (kind, _, dtype), case = self.items[i]
            try:
                if kind == "linear":
                    case.linear_expected_for(dtype)
                else:
                    case.expected_for(dtype)
                done = DONE
            except Exception:  # the run computes it again, and reports what goes wrong
                done = FAILED
            cache.forget()  # stored: the helper keeps nothing
            with self.state.get_lock():
                self.state[i] = done

    # -- in the run ------------------------------------------------------------------------

    def settled(self, item: Item) -> bool:
        """``harness.oracle.cache.Helper.settled``."""
        i = self.index.get(item)
        if i is None:
            return False
        deadline = time.monotonic() + PATIENCE_S + PATIENCE_S_PER_LOGIT * _size(self.items[i][1])
        while True:
            with self.state.get_lock():
                state = self.state[i]
                if state == FREE:
                    self.state[i] = RUN
                    return False
            if state != HELPER:
                return state == DONE
            # a helper that died, or is slower than the run would be (compiling numba's
            # kernels, or short of CPU): the run computes the value itself
            if not self.process.is_alive() or time.monotonic() > deadline:
                return False
            time.sleep(0.001)

    def ready(self, case: Case) -> bool:
        """Whether the helper has computed every value of ``case`` that is an item (a look,
        without waiting)."""
        with self.state.get_lock():
            return all(self.state[i] == DONE for i in self._case_items.get(case.id, ()))

    def close(self) -> None:
        """Stop the helper (what it has stored stays)."""
        cache.set_helper(None)
        if self.process.is_alive():
            self.process.terminate()
        self.process.join()


def applies(config: RunConfig) -> bool:
    """Whether a run of ``config`` may start a helper (the module's docstring)."""
    return (
        start_method() == "fork"  # Linux, and no framework's threads for the fork to copy
        and _single_threaded()
        and config.jobs <= 1
        and config.world_size is None
        and not config.list_only
        and cache_dir() is not None
        and cores.available() > 1
    )


@contextlib.contextmanager
def helping(cases: list[Case], config: RunConfig) -> Iterator[Prefetch | None]:
    """A helper computing the values ``cases`` lack, while the block runs (None when none
    is started: see ``applies``)."""
    if not applies(config):
        yield None
        return
    items = pending_items(cases)
    if sum(_size(case) for _, case in items) < MIN_LOGITS:
        yield None
        return
    helper = Prefetch(items)
    helper.process.start()
    cache.set_helper(helper)
    try:
        yield helper
    finally:
        helper.close()
