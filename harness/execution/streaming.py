"""Large cases end to end without a float64 copy of anything the size of the logits.

A case takes this path when ``applies``: ``expected: oracle``, 2-D logits (N, C) of at least
``harness.oracle.cache.LARGE_ELEMENTS`` elements, class-index targets, no kernel field. Then:

- the logits are made directly in the case dtype, block by block
  (``Case.blockwise_inputs``), and a CRC-32 of their bytes is taken as they are made, on a
  thread beside the generation;
- the in-place write check compares that checksum with one taken after the call instead of
  keeping a copy; only when they differ are the logits made again, to say which elements
  changed (the message of a small case) and to give the oracle the unmodified values;
- the oracle (``harness.oracle.fast.RowBlocks``, the same correctly rounded arithmetic) and
  the error bounds (``harness.oracle.error_model.RowBounds``) run block of rows by block of
  rows, and each block is compared with the adapter's gradient rows as it is made
  (``BlockComparison``), so neither the float64 expected gradient nor its bound is held;
- only the loss and its bound are cached on disk (``harness.oracle.cache``), never the
  gradient.

The results are those of the plain path: same statuses, errors, ratios and messages
(``tests/test_streaming.py`` runs both on the same cases).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from harness.adapters import CallInputs
from harness.cases.model import Case
from harness.dtypes import carrier, scalar_ulp
from harness.execution.compare import Comparison, Errors, compare, mismatch_message
from harness.oracle import cache, compiled
from harness.oracle.error_model import RowBounds
from harness.oracle.fast import RowBlocks, preload_tables
from harness.oracle.problem import Expected, Problem

#: logits per block of rows: float64 blocks of 8 MiB (the size of the error model's blocks)
BLOCK_ELEMENTS = 1 << 20


def applies(case: Case) -> bool:
    """Whether ``case`` runs on the streaming path (see the module's docstring)."""
    return (
        case.expected is None
        and case.expect_error is None
        and case.logits_size >= cache.LARGE_ELEMENTS  # first: what most cases are not
        and len(case.logits_shape) == 2
        and not case.probability_target
        and case.softcap is None
        and case.logit_scale == 1.0
        and case.z_loss == 0.0
        and not case.return_z_loss
        and case.shift == 0
    )


@dataclass
class LogitsDigest:
    """CRC-32 of the logits' bytes, taken block by block as they are made."""

    crc: int = 0

    def add(self, block: np.ndarray) -> None:
        self.crc = zlib.crc32(_bytes(block), self.crc)

    @contextlib.contextmanager
    def beside(self) -> Iterator[Callable[[np.ndarray], None]]:
        """``add`` on a thread of its own, beside the code that makes the blocks (zlib
        releases the GIL over a buffer; the generator holds it): yields the function to give
        each block to, in order; on leaving, every block given has been added. A block must
        not change until then."""
        blocks: queue.SimpleQueue[np.ndarray | None] = queue.SimpleQueue()
        failed: list[BaseException] = []

        def follow() -> None:
            while (block := blocks.get()) is not None:
                if not failed:
                    try:
                        self.add(block)
                    except BaseException as e:  # re-raised by the caller's thread
                        failed.append(e)

        thread = threading.Thread(target=follow, name="lossconf-digest", daemon=True)
        thread.start()
        try:
            yield blocks.put
        finally:
            blocks.put(None)
            thread.join()
        if failed:
            raise failed[0]

    def matches(self, logits: object) -> bool:
        """Whether ``logits`` still has the bytes the digest was taken of (CRC-32 over about
        1 GB/s; a copy and a comparison would cost the logits' bytes again)."""
        if not isinstance(logits, np.ndarray) or not logits.flags.c_contiguous:
            return False
        return zlib.crc32(_bytes(logits)) == self.crc


def _bytes(a: np.ndarray) -> memoryview:
    """The bytes of an array, without a copy when it is C-contiguous."""
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8).data


def fresh_inputs(case: Case, dtype: str, want_grad: bool) -> tuple[CallInputs, LogitsDigest]:
    """The call's inputs, logits made directly in ``dtype``, with their checksum."""
    digest = LogitsDigest()
    loading = _preload(case, dtype)
    try:
        with digest.beside() as add:  # the checksum beside the generation, on the other core
            inputs = case.blockwise_inputs(dtype, want_grad=want_grad, on_block=add)
    finally:
        if loading is not None:  # done before the adapter's call, which it must not slow
            loading.join()
    return inputs, digest


def _preload(case: Case, dtype: str) -> threading.Thread | None:
    """A thread loading the compiled kernels the oracle and the bounds will run on ``case``
    (``compiled.preload``), started while its logits are made (the generator holds the GIL
    while it draws a block, the loading between blocks); None where they will not run."""
    logits = carrier(dtype)
    if not (
        case.logits_size >= compiled.MIN_LOGITS
        and logits in (np.float32, np.float64)
        and case.label_smoothing == 0
        and not case.probability_target
        and compiled.available()
    ):
        return None

    def load() -> None:
        # a kernel that cannot be loaded here fails again at its first call, which reports it
        with contextlib.suppress(Exception):
            compiled.preload(logits, logits)
            preload_tables()

    thread = threading.Thread(target=load, name="lossconf-preload", daemon=True)
    thread.start()
    return thread


def pristine_inputs(case: Case, dtype: str, want_grad: bool) -> CallInputs:
    """The inputs made again: the unmodified values, after an adapter wrote to its own."""
    return case.blockwise_inputs(dtype, want_grad=want_grad)


class BlockComparison:
    """``compare`` of a (P, C) array given block of rows by block of rows, in any order: the
    same ``Comparison`` (errors, worst element, message) as one call on the whole arrays."""

    def __init__(self, shape: tuple[int, int], dtype: str, what: str, rtol: float, atol: float):
        self.shape, self.dtype, self.what = shape, dtype, what
        self.rtol, self.atol = rtol, atol
        self.max_abs = self.max_rel = self.max_ratio = self.scale = 0.0
        self.nonfinite = False
        self.n_bad = 0
        #: the worst mismatch so far: (sort key, flat index, expected, got, detail)
        self.worst: tuple | None = None

    def add(self, row0: int, got: np.ndarray, expected: np.ndarray, bound: np.ndarray) -> None:
        """Rows ``row0 ...`` of the three arrays (got in any floating dtype)."""
        c = compare(
            got, expected, bound, self.dtype, self.what, rtol=self.rtol, atol=self.atol
        )  # fmt: skip
        finite = np.isfinite(expected)
        block_scale = np.abs(expected, where=finite, out=np.zeros_like(expected)).max(initial=0.0)
        self.scale = max(self.scale, float(block_scale))
        self.nonfinite |= c.nonfinite
        if not c.nonfinite:
            self.max_abs = max(self.max_abs, c.errors.max_abs)
            self.max_rel = max(self.max_rel, c.errors.max_rel)
            self.max_ratio = max(self.max_ratio, c.errors.max_ratio)
        if c.ok:
            return
        self.n_bad += c.n_bad
        flat = row0 * self.shape[1] + c.worst
        e_rows, g_rows = expected.reshape(-1), np.asarray(got).reshape(-1)
        # compare's choice: the first non-finite mismatch, else the largest ratio, first on ties
        key = (1, 0.0, -flat) if c.nonfinite else (0, c.worst_ratio, -flat)
        if self.worst is None or key > self.worst[0]:
            e, g = float(e_rows[c.worst]), float(g_rows[c.worst])
            self.worst = (key, flat, e, g, c.detail)

    def absorb(self, stats: np.ndarray) -> None:
        """Rows every pair of which is finite and within tolerance, by their maxima: (r, 5)
        (1, largest |got - expected|, relative error, test ratio, |expected|), as
        ``RowBounds.compare_rows`` gives them."""
        if stats.shape[0]:
            self.max_abs = max(self.max_abs, float(stats[:, 1].max()))
            self.max_rel = max(self.max_rel, float(stats[:, 2].max()))
            self.max_ratio = max(self.max_ratio, float(stats[:, 3].max()))
            self.scale = max(self.scale, float(stats[:, 4].max()))

    def result(self) -> Comparison:
        if self.nonfinite:
            errors = Errors(float("inf"), float("inf"), float("inf"), float("inf"))
        else:
            ulp = self.max_abs / scalar_ulp(self.scale, self.dtype)
            errors = Errors(self.max_abs, self.max_rel, ulp, self.max_ratio)
        if self.worst is None:
            return Comparison(True, errors, None)
        key, flat, e, g, detail = self.worst
        message = mismatch_message(self.what, self.shape, flat, e, g, detail, self.n_bad)
        return Comparison(
            False, errors, message, flat, self.n_bad, self.nonfinite, key[1], detail
        )  # fmt: skip


def expected_loss(case: Case, dtype: str, pristine: CallInputs) -> Expected | None:
    """The expected loss and its bound (no gradient): from the disk cache, or one pass of the
    oracle without the gradient (stored). None: the streaming oracle does not apply."""
    found = cache.read_loss(case.content_hash, dtype)
    if found is not None:
        return found
    problem = Problem.of_call(pristine, carrier_logits=True)
    blocks = RowBlocks(problem, want_grad=False, target_elements=BLOCK_ELEMENTS)
    if not blocks.possible:
        return None
    bounds = RowBounds(problem, dtype, want_grad=False)
    n = problem.logits.shape[0]
    for lo in range(0, n, blocks.rows_per_block):
        hi = min(n, lo + blocks.rows_per_block)
        blocks.block(lo, hi)
        bounds.rows(lo, hi)
    loss, _ = blocks.finish()
    loss_bound, _ = bounds.finish(loss)
    found = Expected(loss, None, loss_bound, None)
    cache.write_loss(case.content_hash, dtype, found)
    return found


def check_gradient(
    case: Case,
    dtype: str,
    pristine: CallInputs,
    grad: np.ndarray,
    rtol: float,
    atol: float,
    on_block: Callable[[int, int], None] | None = None,
) -> tuple[Expected, Comparison] | None:
    """One pass of the oracle and the bounds over blocks of rows, each compared with the same
    rows of ``grad`` (the adapter's, checked for type, shape and dtype) as it is made.

    Returns the expected loss with its bound (gradient None: never held) and the gradient's
    comparison; None when the streaming oracle does not apply (the caller takes the plain
    path). ``on_block(lo, hi)`` is called after each block (progress, benchmarks)."""
    problem = Problem.of_call(pristine, carrier_logits=True)
    blocks = RowBlocks(problem, want_grad=True, target_elements=BLOCK_ELEMENTS)
    if not blocks.possible:
        return None
    bounds = RowBounds(problem, dtype, want_grad=True)
    n, c = problem.logits.shape
    joined = BlockComparison((n, c), dtype, "grad", rtol, atol)
    late_rows: dict[int, np.ndarray] = {}  # rows recomputed in mpmath: their bound so far
    for lo in range(0, n, blocks.rows_per_block):
        hi = min(n, lo + blocks.rows_per_block)
        expected, pending = blocks.block(lo, hi)
        assert expected is not None  # the gradient is wanted
        got = np.ascontiguousarray(grad[lo:hi])
        if not pending.any():
            # the common case in one compiled pass: every pair within its bound
            stats = bounds.compare_rows(lo, hi, expected, got, pending, rtol, atol)
            if stats is not None and stats[:, 0].all():
                joined.absorb(stats)
                if on_block is not None:
                    on_block(lo, hi)
                continue
        # else the bound itself, and ``compare`` (the messages)
        partial = bounds.rows(lo, hi)
        assert partial is not None
        for i in np.nonzero(pending)[0].tolist():
            late_rows[lo + i] = partial[i].copy()
        bound = bounds.grad_bound(partial, expected)
        for a, b in _runs(~pending):
            joined.add(lo + a, grad[lo + a : lo + b], expected[a:b], bound[a:b])
        if on_block is not None:
            on_block(lo, hi)
    loss, late = blocks.finish()
    for row, values in late.items():
        expected_row = values[None, :]
        bound = bounds.grad_bound(late_rows[row][None, :], expected_row)
        joined.add(row, grad[row : row + 1], expected_row, bound)
    loss_bound, _ = bounds.finish(loss)
    found = Expected(loss, None, loss_bound, None)
    cache.write_loss(case.content_hash, dtype, found)
    return found, joined.result()


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The [a, b) runs of True in a 1-D boolean mask."""
    if mask.all():
        return [(0, mask.size)]
    edges = np.diff(np.concatenate([[False], mask, [False]]).astype(np.int8))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return list(zip(starts.tolist(), ends.tolist(), strict=True))
