"""The fast oracle's commonest large case as one compiled pass per row (numba, optional).

Class-index targets without label smoothing, optional class weights, no kernel fields,
float32 or float64 logits: the case of every large language-model batch. The NumPy path
(``harness.oracle.fast``) makes about 100 to 150 array passes per logit; here each row is
a few loops over its logits (its maximum, the exponentials and their sum, the gradient)
in the same double-double arithmetic with the same error bounds (see ``fast``'s module
docstring), chunks of rows spread over threads (``rows``). The one difference is the
exponential: a row is first computed with a cheaper one (one table instead of two,
relative error below ``EPS_EXP_FAST = 2**-91`` instead of ``EPS_EXP = 2**-93``), and only a
row whose values are not all certified that way is computed again with ``fast``'s.

Nothing is decided here that ``fast`` does not decide: a row whose values are not all
certified (the interval of each value rounds to one float64, normal and finite), with
``fast``'s exponential too, is flagged and recomputed by the mpmath oracle, exactly as in
``fast``. Certified values are the correctly rounded ones, so this path, the NumPy path and
mpmath agree bit for bit (``tests/test_oracle_compiled.py``).

numba is optional (``pip install lossconf[fast]``; part of ``all``): without it, or for
other problems, ``fast`` uses NumPy. Compiled code is cached on disk by numba
(``NUMBA_CACHE_DIR`` if set), so only the first large case on a machine pays the
compilation (a few seconds); small problems never reach this module.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from harness import cores
from harness.oracle.problem import Problem

#: problems with at least this many logits take the compiled path (when numba is there)
MIN_LOGITS = 1 << 22


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether numba is installed (found, not imported: importing it takes a while)."""
    return importlib.util.find_spec("numba") is not None


#: the threads a kernel call may use, per calling thread (``threads``, ``set_threads``)
_local = threading.local()


def threads() -> int:
    """How many threads the row kernel runs on when this thread calls it: the CPUs this
    process may run on, unless this thread set a count (``set_threads``)."""
    count: int | None = getattr(_local, "threads", None)
    return count if count is not None else cores.available()


def set_threads(count: int) -> None:
    """The threads the row kernel runs on when this thread calls it."""
    _local.threads = max(1, int(count))


def rows(
    x: np.ndarray, y: np.ndarray, ignore_index: int, w: np.ndarray, sh: np.ndarray,
    sl: np.ndarray, want_grad: bool, zeroed: bool, tab: np.ndarray, pieces: np.ndarray,
    inv: float, tab1: np.ndarray, red: np.ndarray, loss: np.ndarray, grad: np.ndarray,
    bad: np.ndarray, again: np.ndarray, scratch: np.ndarray,
) -> None:  # fmt: skip
    """Every row of ``x`` (float32 or float64, (N, C)) in the compiled row kernel
    (``_kernel.row_chunk``: its docstring says what each argument holds; numba must be
    importable: ``available()``). ``scratch``
    (K, 3, C): one slot a thread; the rows go in chunks, several a thread, to threads that
    take the next chunk when done with one (a thread that shares its core with another
    process takes fewer), on at most K threads and ``threads()``. The values do not depend
    on the split: each row is computed on its own.

    Threads, not numba's ``prange``: the kernel is then compiled once per logits' dtype as
    one loop over rows, without numba's parallel compilation (about 1.5 s of CPU per dtype
    on a first run), and its rows below it once, as float64 (``_kernel._as_float64``)."""
    # numba is optional and slow to import: only a large enough problem loads it
    from harness.oracle import _kernel

    n = x.shape[0]
    k = min(threads(), scratch.shape[0], n)

    def chunk(lo: int, hi: int, slot: np.ndarray) -> None:
        _kernel.row_chunk(
            x, lo, hi, y, ignore_index, w, sh, sl, want_grad, zeroed, tab, pieces, inv, tab1,
            red, loss, grad, bad, again, slot,
        )  # fmt: skip

    if k <= 1:
        chunk(0, n, scratch[0])
        return
    n_chunks = min(n, 4 * k)
    free: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(k):
        free.put(slot)

    def run(c: int) -> None:
        slot = free.get()
        try:
            chunk(c * n // n_chunks, (c + 1) * n // n_chunks, scratch[slot])
        finally:
            free.put(slot)

    with ThreadPoolExecutor(k, thread_name_prefix="lossconf-rows") as pool:
        for done in [pool.submit(run, c) for c in range(n_chunks)]:
            done.result()


def scratch(c: int) -> np.ndarray:
    """Scratch rows for the row kernel: (K, 3, C), one slot per thread it may use."""
    return np.empty((threads(), 3, c))


def bound_kernels() -> tuple[Callable, Callable, Callable]:
    """The compiled kernels of ``harness.oracle.error_model.RowBounds``: shifts, rows, grad."""
    # numba is optional and slow to import: only a large enough problem loads it
    from harness.oracle import _kernel

    return _kernel.bound_shifts, _kernel.bound_rows, _kernel.bound_grad


def fused_kernels() -> tuple[Callable, Callable]:
    """The compiled comparisons: ``bound_compare`` (the gradient's bound and the comparison in
    one pass, ``RowBounds.compare_rows``) and ``within`` (a comparison's common case)."""
    # numba is optional and slow to import: only a large enough problem loads it
    from harness.oracle import _kernel

    return _kernel.bound_compare, _kernel.within


def delta_kernels() -> tuple[Callable, Callable]:
    """The kernels of ``harness.oracle.deltas``: ``encode_deltas``, ``decode_deltas``."""
    # numba is optional and slow to import: only a large enough problem loads it
    from harness.oracle import _kernel

    return _kernel.encode_deltas, _kernel.decode_deltas


def kernels_cached() -> bool:
    """Whether numba's disk cache holds machine code of this source for the row kernel and
    the bound kernels (each at least one specialization), so that a first call loads them
    in a fraction of a second instead of compiling them for seconds; read from numba's cache
    index (which numba empties when the source or numba changed), without loading or
    compiling anything. False where numba's cache is not what this expects."""
    # numba is optional and slow to import: only a caller that may use the kernels asks
    from harness.oracle import _kernel

    kernels: tuple[Any, ...] = (
        _kernel.row_chunk, _kernel.bound_shifts, _kernel.bound_rows, _kernel.bound_grad
    )  # fmt: skip
    try:  # numba's own check of a first call, before it loads what it finds
        return all(bool(kernel._cache._cache_file._load_index()) for kernel in kernels)
    except Exception:  # another numba, another cache: compile nothing on the strength of it
        return False


def preload(logits_dtype: np.dtype, grad_dtype: np.dtype) -> None:
    """Load the kernels a streamed problem of the compiled kind runs (``row_chunk``,
    ``bound_shifts``, ``bound_rows``, ``bound_compare``, ``encode_deltas``,
    ``decode_deltas``) for logits of ``logits_dtype`` and an adapter's gradient of
    ``grad_dtype``, from numba's disk cache (or compile them), without running them: what
    their first call would do (about 0.9 s: importing numba, loading machine code).
    ``harness.execution.streaming`` does it on a thread while the logits are made, whose
    generator holds the GIL only between the blocks it draws."""
    # numba is optional and slow to import: only a large enough problem loads it
    import numba

    from harness.oracle import _kernel

    def sig(*args: object) -> tuple:
        return tuple(numba.typeof(a) for a in args)

    x = np.zeros((1, 1), logits_dtype)
    f1, f2 = np.zeros(1), np.zeros((1, 1))
    i1, b1 = np.zeros(1, np.int64), np.zeros(1, bool)
    # the argument types of the calls in fast._Fast._compiled and error_model.RowBounds
    _kernel.row_chunk.compile(
        sig(x, 0, 0, i1, 0, f1, f1, f1, True, True, f2, f1, 0.0, f2, f1, f2, f2, b1, b1, f2)
    )
    _kernel.bound_shifts.compile(sig(x, f2, f1, b1))
    state = (x, f2, f1, f1, i1, f1, f1, b1, f1)
    _kernel.bound_rows.compile(sig(*state, True, f2, f2))
    got = np.zeros((1, 1), grad_dtype)
    _kernel.bound_compare.compile(sig(*state, 0.0, f2, got, b1, f1, f2))
    deltas, checks = np.zeros((1, 1), np.int8), np.zeros(1, np.uint64)
    _kernel.encode_deltas.compile(sig(f2, f1, i1, f1, f2, b1, deltas, checks, 0))
    _kernel.decode_deltas.compile(sig(f2, f1, i1, f1, deltas, b1, checks, 0, f2))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """The row kernel this thread calls inside runs on this thread alone."""
    most = threads()
    set_threads(1)
    try:
        yield
    finally:
        set_threads(most)


class ThreadChoice:
    """How many threads the row kernel runs on, block by block, chosen by timing the blocks:
    all of them, or one. On a quiet machine the rows spread over the cores run in about
    half the time; while another process keeps a core busy, one thread may be the faster
    (each thread's share of a chunk still waits on that core). Each count is
    timed (after a first block that may load the kernel), the faster one used, and the
    other timed again every ``RETRY`` blocks. The values do not depend on it: each row is
    computed on its own."""

    RETRY = 16

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}  # threads -> the last block's seconds per row
        self.blocks = 0

    def _pick(self, most: int) -> int:
        if most == 1 or self.blocks < 2:
            return most
        for k in (most, 1):  # each count timed once
            if k not in self.seconds:
                return k
        best = min(self.seconds, key=self.seconds.__getitem__)
        other = 1 if best == most else most
        return other if self.blocks % self.RETRY == 0 else best

    @contextlib.contextmanager
    def timed(self, rows: int) -> Iterator[None]:
        """Run the kernel's call inside: on the threads chosen, timed."""
        most = threads()
        k = self._pick(most)
        set_threads(k)
        start = time.perf_counter()
        try:
            yield
        finally:
            set_threads(most)
            if self.blocks > 0 and rows > 0:  # the first block may load the kernel
                self.seconds[k] = (time.perf_counter() - start) / rows
            self.blocks += 1


def applies(problem: Problem, x: np.ndarray) -> bool:
    """Whether the compiled kernel serves ``problem`` (x: its (P, C) logits)."""
    return (
        x.size >= MIN_LOGITS
        and x.dtype in (np.float32, np.float64)
        and not problem.probability_target
        and problem.label_smoothing == 0
        and not problem.kernel
        # the kernel gives an ignored NaN row PyTorch's NaN gradient (the mean's factor and
        # divisor come from ``fast``, under the dialect)
        and problem.dialect.ignored_rows == "kept"
        and available()
    )
